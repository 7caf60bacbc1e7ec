#!/usr/bin/env bash
# The figures of benchmarks/RESULTS.md "The shipped models": both shipped checkpoints on the first 200
# held-out scenes of the built-in world (seed 0, which they were trained on) and on 200 scenes of a
# world rendered with seed 11 (never trained or tuned on). Reports go to benchmarks/reports/shipped/.
#   bash benchmarks/evaluate_shipped.sh WORLD0_DIR WORLD11_DIR
# CAPTIONER, VQA and OUT (environment) evaluate other checkpoints into another report folder,
# e.g. a candidate before it ships.
set -euo pipefail
cd "$(dirname "$0")/.."
world0=$1; world11=$2
out=${OUT:-benchmarks/reports/shipped}
mkdir -p "$out"
[ -f "$world0/captions_val.json" ] || vlcam data synthetic --out "$world0" --num-images 3000 --seed 0
[ -f "$world11/captions_val.json" ] || vlcam data synthetic --out "$world11" --num-images 200 --seed 11 --val-fraction 1.0
captioner=${CAPTIONER:-vlcam/assets/show_and_tell_synthetic}
vqa=${VQA:-vlcam/assets/vqa_lstm_cnn_synthetic}
for name in world0 world11; do
    world=$([ "$name" = world0 ] && echo "$world0" || echo "$world11")
    vlcam eval captions --checkpoint "$captioner" --captions "$world/captions_val.json" \
        --instances "$world/instances_val.json" --images "$world/images" --limit 200 \
        --train-captions "$world0/captions_train.json" --out "$out/captioner_$name.json" > "$out/captioner_$name.txt"
    vlcam eval vqa --checkpoint "$vqa" --questions "$world/vqa_questions_val.json" \
        --annotations "$world/vqa_annotations_val.json" --images "$world/images" \
        --image-pattern "synth_{image_id:06d}.png" --instances "$world/instances_val.json" \
        --train-questions "$world0/vqa_questions_train.json" --train-annotations "$world0/vqa_annotations_train.json" \
        --question-types "what color is the,what shape is the" --limit 200 \
        --out "$out/vqa_$name.json" > "$out/vqa_$name.txt"
done

#!/usr/bin/env bash
# The figures of benchmarks/RESULTS.md "A LLaVA trained here": the model `vlcam train vlm` builds
# from world 0, on its first 200 held-out scenes and on 200 scenes of a world rendered with seed 11
# (never trained or tuned on). Reports go to benchmarks/reports/vlm/.
#   bash benchmarks/evaluate_vlm.sh WORLD0_DIR WORLD11_DIR LLAVA_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
world0=$1; world11=$2; llava=$3
out=benchmarks/reports/vlm
runs=${RUNS:-$(mktemp -d)}
mkdir -p "$out"
for name in world0 world11; do
    world=$([ "$name" = world0 ] && echo "$world0" || echo "$world11")
    vlcam eval captions --checkpoint "$llava" --captions "$world/captions_val.json" \
        --instances "$world/instances_val.json" --images "$world/images" --limit 200 \
        --train-captions "$world0/captions_train.json" --out "$out/captions_$name.json" > "$out/captions_$name.txt"
    vlcam eval vqa --checkpoint "$llava" --questions "$world/vqa_questions_val.json" \
        --annotations "$world/vqa_annotations_val.json" --images "$world/images" \
        --image-pattern "synth_{image_id:06d}.png" --instances "$world/instances_val.json" \
        --train-questions "$world0/vqa_questions_train.json" --train-annotations "$world0/vqa_annotations_train.json" \
        --question-types "what color is the,what shape is the" --limit 200 \
        --out "$out/vqa_$name.json" > "$out/vqa_$name.txt"
    vlcam eval word-iou --checkpoint "$llava" --instances "$world/instances_val.json" --images "$world/images" \
        --limit 200 --out "$runs/word_iou_$name" > "$out/word_iou_$name.txt"
    cp "$runs/word_iou_$name/summary.json" "$out/word_iou_${name}_summary.json"
done
for block in 0 1 2 3; do
    vlcam eval pointing --checkpoint "$llava" --captions "$world0/captions_val.json" \
        --instances "$world0/instances_val.json" --images "$world0/images" --limit 200 \
        --layer "model.model.vision_tower.encoder.layers.$block" \
        --out "$runs/pointing_block$block" > "$out/pointing_block$block.txt"
    cp "$runs/pointing_block$block/summary.json" "$out/pointing_block${block}_summary.json"
done

#!/usr/bin/env bash
# The caption metrics of benchmarks/RESULTS.md "A ViT + GPT-2 captioner": the model
# `vlcam train hf-captioner` builds from world 0, on its first 200 held-out scenes and on 200
# scenes of a world rendered with seed 11 (never trained or tuned on). Reports go to
# benchmarks/reports/vit_gpt2/.
#   bash benchmarks/evaluate_vit_gpt2.sh WORLD0_DIR WORLD11_DIR VIT_GPT2_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
world0=$1; world11=$2; model=$3
out=benchmarks/reports/vit_gpt2
mkdir -p "$out"
for name in world0 world11; do
    world=$([ "$name" = world0 ] && echo "$world0" || echo "$world11")
    vlcam eval captions --checkpoint "$model" --captions "$world/captions_val.json" \
        --instances "$world/instances_val.json" --images "$world/images" --limit 200 \
        --train-captions "$world0/captions_train.json" --out "$out/captions_$name.json" > "$out/captions_$name.txt"
done

#!/usr/bin/env bash
# The GPU check, one prepared script: every CUDA test, then every benchmark on --device cuda,
# printing the figures for benchmarks/RESULTS.md. Sized for <= 8 minutes on one H200.
#   bash benchmarks/gpu.sh [OUT_DIR]      (reports go to OUT_DIR, default $OUT or benchmarks/reports/gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/reports/gpu}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/machine.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/machine.txt"
run() {  # name, timeout in seconds, command...
    local name=$1 limit=$2; shift 2
    echo "== $name"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt" | grep -v "^$" | tail -25
}
run cuda_tests 120 python -m pytest -q -p no:warnings -k "cuda" tests/test_gradcam.py tests/test_hf_adapters.py tests/test_hf_vlm.py \
    tests/test_hf_vlm_llava_next.py
run bench_core 45 python benchmarks/bench_core.py --device cuda
run bench_caption 45 python benchmarks/bench_caption.py --device cuda
run bench_vqa 45 python benchmarks/bench_vqa.py --device cuda
run bench_hf 60 python benchmarks/bench_hf.py --device cuda
run bench_vlm_small 60 python benchmarks/bench_vlm.py --device cuda --size small --memory
run bench_vlm_1b 120 python benchmarks/bench_vlm.py --device cuda --size 1b --memory --repeats 3
echo "reports in $out"

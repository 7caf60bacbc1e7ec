#!/usr/bin/env bash
# Stage the two trees first: git archive REV vlcam adapters benchmarks | tar -x -C /tmp/REV_pkg, then
# mv /tmp/REV_pkg/adapters /tmp/REV_pkg/vlcam/adapters (REV_pkg = base_pkg for 80bbde0, new_pkg for HEAD).
# Each benchmark on the code before the adapter-contract change (80bbde0) and after, back to back.
set -u
for spec in "bench_core.py --batch 4 --repeats 7" "bench_caption.py --batch 8 --repeats 3 --skip-peer" \
            "bench_vqa.py --repeats 7" "bench_hf.py --repeats 2 --skip-peer" "bench_eval.py --images 12"; do
  for which in base new; do
    echo "=== $which: $spec"
    python "$(dirname "$0")/runbench.py" /tmp/${which}_pkg $spec 2>&1 | grep -v Warning
  done
done

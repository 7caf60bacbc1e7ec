"""Run a benchmark script against a staged copy of vlcam, bypassing the editable install.

    python runbench.py STAGED_ROOT SCRIPT [ARGS...]

STAGED_ROOT holds vlcam/ (with vlcam/adapters/) and benchmarks/ of one revision.
"""

import importlib
import runpy
import sys

root, script, *args = sys.argv[1:]
# The editable install's finder would import the checkout's vlcam, whatever the path says.
sys.meta_path[:] = [m for m in sys.meta_path if "editable" not in repr(m).lower()]
sys.path[:0] = [root, f"{root}/benchmarks"]
vlcam = importlib.import_module("vlcam")
if not vlcam.__file__.startswith(root):
    raise SystemExit(f"imported {vlcam.__file__}, not the staged copy under {root}")
sys.argv = [script, *args]
runpy.run_path(f"{root}/benchmarks/{script}", run_name="__main__")

"""Run a benchmark script against a staged copy of vlcam (base or new), bypassing the editable install."""
import runpy, sys
root, script, *args = sys.argv[1:]
sys.meta_path[:] = [m for m in sys.meta_path if "editable" not in repr(m).lower() and "__editable__" not in type(m).__module__]
sys.path[:0] = [root, f"{root}/benchmarks"]
for name in [m for m in sys.modules if m == "vlcam" or m.startswith("vlcam.")]:
    del sys.modules[name]
import vlcam
assert vlcam.__file__.startswith(root), vlcam.__file__
sys.argv = [script, *args]
runpy.run_path(f"{root}/benchmarks/{script}", run_name="__main__")

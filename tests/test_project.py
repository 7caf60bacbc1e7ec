"""The project's promises to a new user: a light import, the package layout, README's commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_vlcam_is_light(tmp_path):
    heavy = ["spacy", "matplotlib", "transformers", "pycocotools", "timm", "vlcam.adapters"]
    done = run_python(
        "import sys, vlcam; vlcam.grad_cam; "
        f"print([m for m in {heavy!r} if m in sys.modules])",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_adapters_install_as_a_subpackage_only(tmp_path):
    done = run_python(
        "import importlib.util as u, vlcam.adapters; "
        "print(u.find_spec('adapters') is None or 'site-packages' in (u.find_spec('adapters').origin or ''))",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", "a top-level 'adapters' module must not come from vlcam"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.strip().splitlines() if line.strip()]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "vlcam demo" in main_job and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines(), "CI must run README's test command verbatim"


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("vlcam") or str(Path(sys.executable).with_name("vlcam"))
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for group in ("demo", "explain", "train", "eval", "data", "import"):
        assert group in done.stdout
    # Outside the checkout, as a pip-installed user runs it.
    done = subprocess.run([exe, "eval", "pointing", "--help"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0 and "--tolerance" in done.stdout and "--device" in done.stdout, done.stderr

"""vlcam report: one self-contained HTML page per run, which a browser renders with its images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlcam.cli import main
    from vlcam.data.synthetic import generate

    tmp = tmp_path_factory.mktemp("report")
    world = tmp / "world"
    generate(world, num_images=3, image_size=64, seed=4, val_fraction=1.0, workers=1)
    out = tmp / "pointing"
    assert main(["eval", "pointing", "--captions", str(world / "captions_val.json"), "--instances",
                 str(world / "instances_val.json"), "--images", str(world / "images"), "--out", str(out),
                 "--workers", "0", "--device", "cpu", "--html"]) == 0
    return out


def test_the_report_is_one_self_contained_file(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    pictures = sorted(p.name for p in run_dir.glob("*.png"))
    assert "per_category.png" in pictures and any(p.startswith("example_") for p in pictures)
    assert page.count("<img") == len(pictures) == page.count('src="data:image/png;base64,')
    assert not re.search(r'src="(?!data:)', page), "the page refers to a file or a URL"
    for heading in ("Summary", "Plots", "Words", "Best", "Worst", "At random", "Examples"):
        assert f">{heading}</h" in page
    assert ">accuracy<" in page and ">baselines.center<" in page


def test_a_finished_run_is_needed(tmp_path):
    from vlcam.eval.report import write_report

    with pytest.raises(FileNotFoundError, match="holds no summary.json"):
        write_report(tmp_path)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"), reason="no Chromium here (CI installs it)")
def test_headless_chromium_renders_the_report_with_all_its_images(run_dir, tmp_path):
    browser = _chromium()
    assert browser is not None, "CI must install Chromium (.ci/run does)"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                           "--dump-dom", (run_dir / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = re.search(r"\[(\d+)/(\d+) images shown\]", done.stdout)
    assert shown is not None, done.stdout[:2000]
    assert int(shown.group(1)) == int(shown.group(2)) == len(list(run_dir.glob("*.png"))) > 0
    screenshot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={screenshot}",
                    "--window-size=1200,1600", (run_dir / "report.html").as_uri()],
                   capture_output=True, timeout=180, check=True)
    assert screenshot.stat().st_size > 10_000


def test_the_one_file_evaluations_write_their_page_beside_the_report(tmp_path, capsys):
    from vlcam.cli import main
    from vlcam.data.synthetic import generate
    from vlcam.demo import SHIPPED_VQA, shipped_checkpoint

    world = tmp_path / "world"
    generate(world, num_images=3, image_size=64, seed=5, val_fraction=1.0, workers=1)
    out = tmp_path / "captions.json"
    assert main(["eval", "captions", "--captions", str(world / "captions_val.json"), "--instances",
                 str(world / "instances_val.json"), "--images", str(world / "images"), "--out", str(out),
                 "--device", "cpu", "--html"]) == 0
    page = out.with_suffix(".html").read_text(encoding="utf-8")
    assert f"report: {out.with_suffix('.html')}" in capsys.readouterr().out
    # One per-category plot per tolerance (0 and 15 px), all embedded; the words of the 0 px game.
    assert page.count('<img alt="per_category_') == 2 == page.count('src="data:image/png;base64,')
    assert not re.search(r'src="(?!data:)', page)
    assert ">quality.model.cider<" in page and ">pointing_tolerance_0.accuracy<" in page
    assert ">Words</h2>" in page and ">Worst</h3>" in page

    vqa = tmp_path / "vqa.json"
    args = ["eval", "vqa", "--checkpoint", str(shipped_checkpoint(SHIPPED_VQA)), "--questions",
            str(world / "vqa_questions_val.json"), "--annotations", str(world / "vqa_annotations_val.json"),
            "--instances", str(world / "instances_val.json"), "--images", str(world / "images"),
            "--image-pattern", "synth_{image_id:06d}.png", "--device", "cpu", "--html"]
    assert main(args) == 1
    assert "--html" in capsys.readouterr().err  # no page without a report to sit beside
    assert main([*args, "--out", str(vqa)]) == 0
    page = vqa.with_suffix(".html").read_text(encoding="utf-8")
    assert ">accuracy.accuracy<" in page and ">pointing.accuracy<" in page
    assert ">Answers</h2>" in page and "<th>predicted</th>" in page

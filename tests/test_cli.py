"""The command line: every user error is one line on stderr naming the value, exit 1 (2 for
usage), checked before the model loads where that is cheap; --debug shows the traceback."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.cli import main
from vlcam.demo import shipped_checkpoint
from vlcam.text import Vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    image = tmp / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    text = tmp / "notes.txt"
    text.write_text("not an image")
    bomb = tmp / "bomb.png"  # a PNG whose header claims 20000 x 20000 pixels
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _chunk(b"IEND", b""))
    torch.manual_seed(0)
    vqa = VQALSTMCNN(Vocabulary("what color is the ball".split()), ["red", "blue"], "compact", embed_dim=8,
                     hidden_dim=8, common_dim=8, mlp_dim=8, image_size=32).eval()
    return {"image": image, "text": text, "bomb": bomb, "vqa": vqa.save(tmp / "vqa"), "tmp": tmp,
            "captioner": shipped_checkpoint()}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = int(exit_.code or 0)
    err = capsys.readouterr().err
    return status, err


CASES = [
    # (name, argv builder, exit status, what the one line must name)
    ("missing model folder", lambda f: ["explain", "/nope/model", str(f["image"])], 1, "/nope/model"),
    ("missing image", lambda f: ["explain", str(f["captioner"]), str(f["tmp"] / "gone.png")], 1, "gone.png"),
    ("decompression bomb", lambda f: ["explain", str(f["captioner"]), str(f["bomb"])], 1, "bomb.png is too large"),
    ("non-image file", lambda f: ["explain", str(f["captioner"]), str(f["text"])], 1, "notes.txt"),
    ("folder as image", lambda f: ["explain", str(f["captioner"]), str(f["tmp"])], 1, "is not a file"),
    ("question on a captioner", lambda f: ["explain", str(f["captioner"]), str(f["image"]), "--question", "what?"],
     1, "not a VQA model"),
    ("VQA model without a question", lambda f: ["explain", str(f["vqa"]), str(f["image"])], 1, "not a captioner"),
    ("unknown answer", lambda f: ["explain", str(f["vqa"]), str(f["image"]), "--question", "what color is the ball",
                                  "--answer", "purple"], 1, "'purple'"),
    ("bad layer", lambda f: ["explain", str(f["captioner"]), str(f["image"]), "--layer", "encoder.nope"], 1,
     "'encoder.nope'"),
    ("empty caption", lambda f: ["explain", str(f["captioner"]), str(f["image"]), "--caption", ""], 1, "no words"),
    ("unknown figure type", lambda f: ["explain", "/nope/model", str(f["image"]), "--out", "fig.xyz"], 1,
     "'fig.xyz'"),
    ("figure under a file", lambda f: ["explain", "/nope/model", str(f["image"]), "--out",
                                       str(f["text"] / "fig.png")], 1, "notes.txt"),
    ("unknown device", lambda f: ["explain", "/nope/model", str(f["image"]), "--device", "tpu9"], 1, "'tpu9'"),
    ("answer without question", lambda f: ["explain", "/nope/model", str(f["image"]), "--answer", "red"], 2,
     "--answer needs --question"),
    ("demo on a missing device", lambda f: ["demo", "--device", "cuda:7", "--out", str(f["tmp"] / "d")], 1,
     "'cuda:7'"),
    ("demo with no images", lambda f: ["demo", "--num-images", "0"], 2, "--num-images"),
]


@pytest.mark.parametrize("name,argv,status,names", CASES, ids=[c[0] for c in CASES])
def test_each_user_error_is_one_line_naming_the_value(name, argv, status, names, files, capsys):
    got, err = run(argv(files), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == status
    assert "Traceback" not in err and names in err
    assert len(lines) == 1 if status == 1 else lines[-1].startswith("vlcam")


def test_the_cheap_checks_come_before_the_model_loads(files, capsys, monkeypatch):
    import vlcam.loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(vlcam.loading, "load", refuse)
    for argv in (["explain", str(files["captioner"]), str(files["tmp"] / "gone.png")],
                 ["explain", str(files["captioner"]), str(files["image"]), "--out", "x.nope"],
                 ["explain", str(files["captioner"]), str(files["image"]), "--device", "tpu9"]):
        assert run(argv, capsys)[0] == 1


def test_debug_shows_the_traceback(files):
    with pytest.raises(FileNotFoundError, match="/nope/model"):
        main(["--debug", "explain", "/nope/model", str(files["image"])])


def test_a_real_process_prints_no_traceback(files):
    done = subprocess.run([sys.executable, "-m", "vlcam.cli", "explain", "/nope/model", str(files["image"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "/nope/model" in done.stderr and "Traceback" not in done.stderr


def test_valid_runs_still_write_their_figures(files, tmp_path, capsys):
    out = tmp_path / "deep" / "fig.pdf"
    assert main(["explain", str(files["vqa"]), str(files["image"]), "--question", "what color is the ball",
                 "--answer", "red", "--answer", "blue", "--out", str(out)]) == 0
    assert out.is_file() and "red" in capsys.readouterr().out


def test_the_eval_commands_run_and_end_with_a_summary_table(tmp_path, capsys):
    from vlcam.data.synthetic import generate

    world = tmp_path / "world"
    generate(world, num_images=2, image_size=64, seed=8, val_fraction=1.0, workers=1)
    common = ["--captions", str(world / "captions_val.json"), "--images", str(world / "images"), "--limit", "1",
              "--device", "cpu", "--patch", "32", "--stride", "32"]
    assert main(["eval", "occlusion", *common, "--out", str(tmp_path / "occ")]) == 0
    table = capsys.readouterr().out
    assert table.startswith("occlusion: ") and "gradcam.mean_rank_correlation" in table
    assert main(["eval", "deletion", *common, "--steps", "2", "--out", str(tmp_path / "del"), "--json"]) == 0
    assert '"gradcam"' in capsys.readouterr().out and (tmp_path / "del" / "summary.json").is_file()

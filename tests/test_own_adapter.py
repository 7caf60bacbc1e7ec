"""The README's "Write your own adapter" example, run as written: explain_caption, the pointing
game and the command line take it like any shipped model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import vlcam
from vlcam.adapters import Captioner

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Write your own adapter"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the README's adapter section has no python block"
    path = tmp_path_factory.mktemp("own") / "my_adapter.py"
    path.write_text(code.group(1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlcam.data.synthetic import generate

    out = tmp_path_factory.mktemp("own-world") / "world"
    generate(out, num_images=2, image_size=64, seed=3, val_fraction=1.0, workers=1)
    return out


def built(adapter_file: Path):
    from vlcam.loading import from_factory

    torch.manual_seed(0)
    return from_factory(f"{adapter_file}:build")


def test_the_readme_adapter_is_about_40_lines_and_conforms(adapter_file):
    source = adapter_file.read_text().splitlines()
    start = next(i for i, line in enumerate(source) if line.startswith("class MyAdapter"))
    end = next(i for i, line in enumerate(source) if line.startswith("def build"))
    assert 30 <= end - start <= 50
    assert isinstance(built(adapter_file), Captioner)


def test_explain_caption_gives_word_maps_equal_to_single_word_calls(adapter_file, world):
    model = built(adapter_file)
    image = sorted((world / "images").glob("*.png"))[0]
    e = vlcam.explain_caption(model, image, "a red ball on a blue box")
    assert e.tokens == ["a", "red", "ball", "on", "a", "blue", "box"] and e.word_maps.shape == (7, 64, 64)
    for i in (1, 2, 6):
        single = vlcam.explain_caption(model, image, "a red ball on a blue box", words=[i])
        torch.testing.assert_close(e.word_maps[i], single.word_maps[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e.scores()[0, 1:], e.token_logprobs, rtol=1e-5, atol=1e-6)
    assert isinstance(model.caption(image)[0], str)


def test_the_pointing_game_and_the_command_line_take_it(adapter_file, world, tmp_path, capsys):
    from vlcam.cli import main
    from vlcam.data.wordmap import WordMap
    from vlcam.eval.pointing import run_pointing_game

    model = built(adapter_file)
    summary = run_pointing_game(tmp_path / "pointing", model, world / "captions_val.json",
                                world / "instances_val.json", world / "images",
                                WordMap.from_file(world / "word_map.json"), num_workers=0, progress=False)
    assert summary["hits"] + summary["misses"] > 0 and summary["layer"] == "net.cnn.2"
    image = sorted((world / "images").glob("*.png"))[0]
    assert main(["explain", f"{adapter_file}:build", str(image), "--caption", "a red ball",
                 "--out", str(tmp_path / "fig.png")]) == 0
    out = capsys.readouterr().out
    assert "caption: 'a red ball'" in out and "net.cnn.2" in out and (tmp_path / "fig.png").is_file()

"""Suite-wide guard: tests build or train their own models and never download weights."""

from __future__ import annotations

import os

import pytest
import torch

# Read by huggingface_hub (timm, transformers) when first imported, so set before any test module.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to fetch weights (torch.hub, or the Hugging Face hub)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: worker threads cost more than they
    save there, and far more on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory):
    """A built-in world of 3 held-out scenes at 64 px (seed 5), rendered once for the session;
    tests read it and never write into it."""
    from vlcam.data.synthetic import generate

    out = tmp_path_factory.mktemp("tiny-world") / "world"
    generate(out, num_images=3, image_size=64, seed=5, val_fraction=1.0, workers=1)
    return out

"""The model-randomisation sanity check (Adebayo et al., NeurIPS 2018, "Sanity Checks for
Saliency Maps"; Quantus' MPRT): a map that explains what the model learnt must change when
the model's weights are replaced by random ones.

A **block** is a module of the adapter that holds parameters and runs in the explained
forward: the adapter's top-level children that hold parameters, where every module that
contains the explained layer is split into its own children, down to the layer itself.
For Show-and-Tell this gives ``classifier, lstm, word_embed, image_embed`` and then the
encoder's blocks down to the first (``encoder.body.block5`` .. ``block1``, block5 being the
explained layer). The blocks are ordered from the output to the input by when they first run
in the explained forward (last to run first). Parameters held directly by a module that is
split, and blocks that do not run, are left alone.

Two randomisations, as in Adebayo et al. Sec. 3.1:

- **cascading**: the top block randomised, then the next one down as well, and so on
  (cumulatively), state 0 being the trained model;
- **independent**: one block at a time, the others trained.

Randomising a block re-initialises its parameters (and buffers) with its modules'
``reset_parameters()``; a parameter no such method covers is drawn from N(0, 0.02^2)
(transformers' default ``initializer_range``). Each block's draw is seeded by the run's seed
and the block's name, so a block gets the same random weights in both randomisations, and
the caller's random generators are left untouched. Parameters tied across blocks (a tied
output embedding) are randomised with either block. All randomisation happens in a
``copy.deepcopy`` of the model: the model passed in is never changed.

For each randomised state and each method (Grad-CAM, guided backpropagation as
``|gradient|`` max over colour channels, Guided Grad-CAM) the map is compared with the
trained model's map of the same method and target: Spearman's rank correlation
(:func:`vlcam.eval.occlusion.rank_correlation`) and SSIM (scikit-image, maps min-max
normalised to [0, 1]). A faithful method's similarity falls as the model is randomised.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from vlcam._state import preserved
from vlcam.adapters.protocol import AnswerModel, Captioner, ImageModel, check_conforms
from vlcam.data.wordmap import WordMap
from vlcam.eval.occlusion import rank_correlation
from vlcam.eval.runner import Run, caption_units, mean_and_error, question_units, resumable_run, skip_counts

METHODS = ("gradcam", "guided_backprop", "guided_gradcam")
RANDOMISATIONS = ("cascading", "independent")
MEASURES = ("spearman", "ssim")
TRAINED = "none"  # the name of cascading state 0, no block randomised
# The std of the normal draw for parameters no reset_parameters() covers.
INIT_STD = 0.02
PLOT_FILE = "sanity.png"


def model_blocks(model: nn.Module, forward: Callable[[], object], layer: str) -> list[str]:
    """Return the dotted names of `model`'s blocks (see the module docstring), output first.

    `forward()` runs the explained forward once on `model` (in eval mode, without grad, the
    model's buffers restored after); its order of calls gives the order of the blocks.
    `layer` is the explained layer's dotted name.
    """
    model.get_submodule(layer)  # AttributeError naming it when there is none
    candidates: list[str] = []

    def split(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if next(child.parameters(), None) is None:
                continue
            if full != layer and layer.startswith(full + "."):
                split(full + ".", child)
            else:
                candidates.append(full)

    split("", model)
    first_call: dict[str, int] = {}
    handles = []
    for name in candidates:
        def note(_module: nn.Module, _args: object, name: str = name) -> None:
            first_call.setdefault(name, len(first_call))
        handles.append(model.get_submodule(name).register_forward_pre_hook(note))
    try:
        # In eval mode: a train-mode forward would move batch-norm statistics.
        with preserved(model, eval_mode=True, rng=True), torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return sorted(first_call, key=first_call.__getitem__, reverse=True)


def _block_seed(seed: int, block: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(block.encode())) % (2**63)


def randomise_block(block: nn.Module, seed: int) -> None:
    """Re-initialise `block`'s parameters in place from `seed`; the caller's generators are untouched.

    Each module's ``reset_parameters()`` where it has one (which also resets batch-norm
    statistics), else N(0, INIT_STD^2) for the parameters none covers.
    """
    devices = sorted({p.device.index or 0 for p in block.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        covered: set[int] = set()
        for module in block.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in module.parameters(recurse=False))
        for p in block.parameters():
            if id(p) not in covered:
                p.normal_(0.0, INIT_STD)


class RandomisedModel:
    """A deep copy of a model whose blocks are set, on request, to trained or randomised weights.

    The random weights of each block are drawn once (:func:`randomise_block`, seeded by
    `seed` and the block's name) and kept, so every state is rebuilt exactly.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[str] | Callable[[nn.Module], Sequence[str]],
                 seed: int = 0) -> None:
        """`blocks` are dotted block names, or a function giving them from the copy."""
        self.model = copy.deepcopy(model)
        self.blocks = list(blocks(self.model) if callable(blocks) else blocks)
        self._trained = {b: _state_of(self.model.get_submodule(b)) for b in self.blocks}
        self._random = {}
        for b in self.blocks:
            randomise_block(self.model.get_submodule(b), _block_seed(seed, b))
            self._random[b] = _state_of(self.model.get_submodule(b))
            self._load(b, self._trained[b])

    def _load(self, block: str, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in _tensors(self.model.get_submodule(block)).items():
                tensor.copy_(state[name])

    def set(self, randomised: Sequence[str]) -> nn.Module:
        """Return the copy with the blocks in `randomised` random and the others trained."""
        unknown = [b for b in randomised if b not in self._random]
        if unknown:
            raise ValueError(f"unknown blocks {unknown}; the model's blocks are {self.blocks}")
        # Trained first, random last: a tensor tied across blocks ends random when either is.
        for b in self.blocks:
            if b not in randomised:
                self._load(b, self._trained[b])
        for b in randomised:
            self._load(b, self._random[b])
        return self.model

    def states(self) -> Iterator[tuple[str, int, list[str]]]:
        """Yield (randomisation, position, blocks randomised) of every state the check visits."""
        for i in range(len(self.blocks) + 1):
            yield "cascading", i, self.blocks[:i]
        for i, b in enumerate(self.blocks):
            yield "independent", i, [b]


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters(remove_duplicate=False)),
            **dict(module.named_buffers(remove_duplicate=False))}


def _state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in _tensors(module).items()}


def normalised(m: torch.Tensor | np.ndarray) -> np.ndarray:
    """Return map `m` as float64 min-max scaled to [0, 1] (all zeros for a constant map)."""
    a = m.detach().float().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    a = a.astype(np.float64)
    span = a.max() - a.min()
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def similarity(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Return {"spearman": rank correlation, "ssim": SSIM on [0, 1]-normalised maps} of two maps."""
    from skimage.metrics import structural_similarity

    ssim: Callable[..., float] = structural_similarity  # scikit-image ships no type hints
    return {
        "spearman": rank_correlation(reference, other),
        "ssim": float(ssim(normalised(reference), normalised(other), data_range=1.0)),
    }


# One state's maps: method -> [K, H, W], one per explained target.
Maps = dict[str, torch.Tensor]


def _caption_maps(model: Captioner, images: torch.Tensor, caption: str, words: list[int]) -> Maps:
    from vlcam.explain.caption import explain_caption

    e = explain_caption(model, images, caption, words=words)
    guided = explain_caption(model, images, caption, words=words, method="guided-gradcam")
    # Target 0 is the whole caption; the words follow.
    return {
        "gradcam": e.word_maps,
        "guided_backprop": torch.stack([e.guided_backprop(k).abs().amax(dim=0) for k in range(1, len(words) + 1)]),
        "guided_gradcam": guided.word_maps,
    }


def _answer_maps(model: AnswerModel, images: torch.Tensor, question: str, answer: str | None) -> tuple[Maps, str]:
    from vlcam.explain.answer import explain_answer

    e = explain_answer(model, images, question, answer)
    guided = explain_answer(model, images, question, e.answers[0], method="guided-gradcam")
    return {"gradcam": e.maps, "guided_backprop": e.guided_backprop(0).abs().amax(dim=0)[None],
            "guided_gradcam": guided.maps}, e.answers[0]


def _compare(randomised: RandomisedModel, reference: Maps, maps_of: Callable[[nn.Module], Maps]
             ) -> list[dict[str, Any]]:
    """Return one result per target: randomisation -> method -> measure -> a value per state."""
    targets = len(reference["gradcam"])
    results: list[dict[str, Any]] = [
        {r: {m: {s: [] for s in MEASURES} for m in METHODS} for r in RANDOMISATIONS} for _ in range(targets)
    ]
    for randomisation, _, blocks in randomised.states():
        maps = maps_of(randomised.set(blocks))
        for k in range(targets):
            for method in METHODS:
                for measure, value in similarity(reference[method][k], maps[method][k]).items():
                    results[k][randomisation][method][measure].append(value)
    randomised.set([])
    return results


class _Blocks:
    """The run's randomised copy, built at its first unit (the blocks need one forward)."""

    def __init__(self, model: nn.Module, layer: str | None, seed: int) -> None:
        self.source, self.seed = model, seed
        self.layer = layer if layer is not None else str(model.default_layer)
        self.randomised: RandomisedModel | None = None

    def get(self, forward_on: Callable[[nn.Module], object]) -> RandomisedModel:
        if self.randomised is None:
            def blocks(work: nn.Module) -> list[str]:
                names = model_blocks(work, lambda: forward_on(work), self.layer)
                if not names:
                    raise ValueError(f"{type(self.source).__name__} has no block with parameters that runs in "
                                     "its forward")
                return names

            self.randomised = RandomisedModel(self.source, blocks, self.seed)
        return self.randomised


def _summary_curves(targets: list[dict[str, Any]], blocks: list[str]) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    for randomisation in RANDOMISATIONS:
        names = [TRAINED, *blocks] if randomisation == "cascading" else blocks
        curves[randomisation] = {
            method: [
                {"randomised": name,
                 **{measure: mean_and_error(t[randomisation][method][measure][i] for t in targets)
                    for measure in MEASURES}}
                for i, name in enumerate(names)
            ]
            for method in METHODS
        }
    return curves


def _summarize(records: list[dict[str, Any]], unit: str, **settings: Any) -> dict[str, Any]:
    scored = [r for r in records if r.get("targets")]
    block_lists = {tuple(r["blocks"]) for r in scored}
    if len(block_lists) > 1:
        raise ValueError(f"the items were written with different blocks {sorted(block_lists)}: "
                         "rerun into an empty folder")
    blocks = list(next(iter(block_lists))) if block_lists else []
    targets = [t for r in scored for t in r["targets"]]
    return {
        unit: len(records), "targets": len(targets), "blocks": blocks, "methods": list(METHODS), **settings,
        **_summary_curves(targets, blocks),
        "skipped": skip_counts(records),
    }


def plot_sanity(summary: dict[str, Any], path: str | Path) -> Path:
    """Return `path` after drawing the cascading curves (Adebayo et al. Fig. 2) into it.

    x: the blocks randomised from the top, cumulatively; y: the mean rank correlation (left)
    and SSIM (right) with the trained model's map, one line per method, ± one standard error.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [TRAINED, *summary["blocks"]]
    x = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(max(10.0, 1.3 * len(labels)), 4.5), squeeze=False)
    for ax, measure, title in zip(axes[0], MEASURES, ("rank correlation (Spearman)", "SSIM")):
        for method in summary["methods"]:
            points = summary["cascading"][method]
            mean = np.array([p[measure]["mean"] if p[measure]["mean"] is not None else np.nan for p in points])
            error = np.array([p[measure]["standard_error"] or 0.0 for p in points])
            ax.plot(x, mean, marker="o", label=method.replace("_", " "))
            ax.fill_between(x, mean - error, mean + error, alpha=0.2)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(bottom=min(-0.2 if measure == "spearman" else 0.0, ax.get_ylim()[0]), top=1.05)
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.set_xlabel("blocks randomised from the top (cascading)")
        ax.set_ylabel(f"mean {title} with the trained map")
        ax.legend(fontsize=8)
    fig.suptitle(f"model-randomisation sanity check ({summary['targets']} targets)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_sanity(
    out_dir: str | Path,
    model: Captioner | AnswerModel,
    captions_json: str | Path | None = None,
    images_dir: str | Path | None = None,
    *,
    questions_json: str | Path | None = None,
    image_pattern: str = "COCO_{split}2014_{image_id:012d}.jpg",
    word_map: WordMap | None = None,
    layer: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    num_workers: int = 2,
    plot: bool = True,
) -> dict[str, Any] | None:
    """Return (on rank 0) the model-randomisation check's mean similarities per method and block.

    With `captions_json` (a COCO captions file) each visual word of the first `limit`
    captions (by annotation id; `word_map` names them, default the one `explain_caption`
    uses for "visual") is explained; with `questions_json` (VQA questions) each question's
    top answer of the trained model is. Images are read from `images_dir` (VQA file names
    by `image_pattern`) and explained at the model's input resolution. The summary holds,
    for "cascading" and "independent", per method a list of per-state
    ``{"randomised": block, "spearman": {mean, standard_error}, "ssim": {...}}`` (cascading
    starts with "none", the trained model's copy); `plot` also writes sanity.png
    (:func:`plot_sanity`). Resumable and sharded like every run (:func:`resumable_run`).
    """
    if (captions_json is None) == (questions_json is None):
        raise ValueError("give exactly one of captions_json (explain caption words) or questions_json "
                         "(explain answers)")
    if images_dir is None:
        raise ValueError("images_dir is required: the folder the captions' or questions' images are in")
    holder = _Blocks(check_conforms(model, ImageModel, "the sanity check"), layer, seed)
    if captions_json is not None:
        summary = _caption_run(out_dir, model, captions_json, images_dir, word_map, holder, limit, num_workers)
    else:
        assert questions_json is not None
        summary = _answer_run(out_dir, model, questions_json, images_dir, image_pattern, holder, limit,
                              num_workers)
    if summary is not None and plot:
        plot_sanity(summary, Path(out_dir) / PLOT_FILE)
    return summary


def _caption_run(out_dir: str | Path, model: Any, captions_json: str | Path, images_dir: str | Path,
                 word_map: WordMap | None, holder: _Blocks, limit: int | None, num_workers: int
                 ) -> dict[str, Any] | None:
    from vlcam.explain.caption import caption_words, default_word_map

    check_conforms(model, Captioner, "the sanity check of caption words needs a captioner")
    words_of = word_map or default_word_map(model.known_words())
    anns, path_of = caption_units(captions_json, images_dir, limit)

    def unit_record(ann: dict[str, Any]) -> dict[str, Any]:
        return {"key": ann["id"], "image_id": ann["image_id"], "targets": []}

    def process(run: Run, ann: dict[str, Any], pixels: np.ndarray) -> list[dict[str, Any]]:
        record = unit_record(ann)
        heads = [m.head for m in words_of.match(caption_words(model, ann["caption"]))]
        if not heads:
            return [record]
        images = model.preprocess(pixels)
        reference = _caption_maps(model, images, ann["caption"], heads)

        def maps_of(m: nn.Module) -> Maps:
            return _caption_maps(cast(Captioner, m), images, ann["caption"], heads)

        def forward_on(m: nn.Module) -> object:
            captioner = cast(Captioner, m)
            return captioner.word_logprobs(images, *captioner.encode_caption(ann["caption"])[1])

        randomised = holder.get(forward_on)
        results = _compare(randomised, reference, maps_of)
        record["blocks"] = randomised.blocks
        record["targets"] = [{"word_index": t, **r} for t, r in zip(heads, results)]
        run.computed += len(heads)
        return [record]

    return resumable_run(
        out_dir, anns, unit_record=unit_record,
        path_of=path_of,
        process=process, order=lambda r: r["key"],
        summarize=lambda records: _summarize(records, "captions", seed=holder.seed, layer=holder.layer),
        desc="sanity check (captions)", num_workers=num_workers)


def _answer_run(out_dir: str | Path, model: Any, questions_json: str | Path, images_dir: str | Path,
                image_pattern: str, holder: _Blocks, limit: int | None, num_workers: int
                ) -> dict[str, Any] | None:
    from vlcam.eval.faithfulness import _question_record

    check_conforms(model, AnswerModel, "the sanity check of answers needs a VQA model")
    questions, path_of = question_units(questions_json, images_dir, image_pattern, limit)

    def process(run: Run, q: dict[str, Any], pixels: np.ndarray) -> list[dict[str, Any]]:
        record = {**_question_record(q), "targets": []}
        images = model.preprocess(pixels)
        reference, answer = _answer_maps(model, images, q["question"], None)

        def maps_of(m: nn.Module) -> Maps:
            return _answer_maps(cast(AnswerModel, m), images, q["question"], answer)[0]

        def forward_on(m: nn.Module) -> object:
            vqa = cast(AnswerModel, m)
            return vqa.answer_scores(images, vqa.encode_question(q["question"]), *vqa.answer_inputs([answer])[0])

        randomised = holder.get(forward_on)
        results = _compare(randomised, reference, maps_of)
        record.update(answer=answer, blocks=randomised.blocks, targets=results)
        run.computed += 1
        return [record]

    return resumable_run(
        out_dir, questions, unit_record=lambda q: {**_question_record(q), "targets": []}, path_of=path_of,
        process=process, order=lambda r: r["key"],
        summarize=lambda records: _summarize(records, "questions", seed=holder.seed, layer=holder.layer),
        desc="sanity check (answers)", num_workers=num_workers)


__all__ = ["METHODS", "RandomisedModel", "model_blocks", "normalised", "plot_sanity", "randomise_block",
           "run_sanity", "similarity"]

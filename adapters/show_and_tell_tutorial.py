"""Import checkpoints of the PyTorch tutorial's Show and Tell (yunjey/pytorch-tutorial).

The tutorial (tutorials/03-advanced/image_captioning) trains an ``EncoderCNN`` (a
torchvision ResNet without its fc, a Linear to the embedding size, a BatchNorm1d) and a
``DecoderRNN`` (Embedding, LSTM, Linear), saves each one's ``state_dict()`` with
``torch.save`` (encoder-5-3000.ckpt, decoder-5-3000.ckpt), and pickles its vocabulary, an
object of the ``Vocabulary`` class of its build_vocab.py. :func:`import_tutorial_checkpoint`
turns the three files into a native :class:`ShowAndTell` that computes the same
log-probabilities, so Grad-CAM explains it as it explains any native model, and
``model.save(dir)`` writes an ordinary vlcam checkpoint (safetensors and JSON).

Both models align the same way: the image vector is the LSTM's input at t = 0 (the tutorial
trains it to predict <start>; vlcam ignores that prediction), embed(<start>) predicts the
first word, and so on.

Tokenisation differs a little. The tutorial built its vocabulary with nltk's
``word_tokenize``; vlcam tokenises captions with spaCy and drops punctuation. Both split
"don't" into "do" "n't" and "man's" into "man" "'s", but spaCy splits hyphenated words
("t-shirt" -> "t" "shirt") that the tutorial's vocabulary holds whole (so they become
<unk>), and punctuation tokens such as "." are in the tutorial's vocabulary and may be
generated, but are never part of a caption that vlcam scores or explains.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.text import SPECIALS, Vocabulary

# torchvision families whose children are conv1, bn1, relu, maxpool, layer1..4, avgpool, fc:
# the layout the tutorial's ``nn.Sequential(*list(resnet.children())[:-1])`` indexes.
RESNET_FAMILIES = ("resnet", "resnext", "wide_resnet")
# Tutorial parameter prefixes -> native ones; the encoder's "resnet.<i>" is mapped by index.
_ENCODER_PREFIXES = {"linear": "image_embed", "bn": "image_norm"}
_DECODER_PREFIXES = {"embed": "word_embed", "lstm": "lstm", "linear": "classifier"}
_LSTM_LAYER = re.compile(r"lstm\.weight_ih_l(\d+)$")
_SHOWN = 6  # keys listed in an error before "and N more"


# --- The vocabulary ---------------------------------------------------------------------


class UnsafePickleError(pickle.UnpicklingError):
    """A vocabulary pickle asked for a global (a callable or class) that is not allowed."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain data and one stand-in for the tutorial's Vocabulary class.

    A pickle names every callable it wants to run through `find_class`; refusing all but
    these leaves nothing that can run code. The stand-in class is created per unpickler,
    so a pickle that sets attributes on it cannot affect a later load.
    """

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.stand_in = type("Vocabulary", (), {"__doc__": "Plain data of a pickled tutorial vocabulary."})

    def find_class(self, module: str, name: str) -> Any:
        if name == "Vocabulary":
            return self.stand_in
        # Protocols 0 and 1 pickle a plain object as copyreg._reconstructor(cls, object,
        # None), under its Python 2 names.
        if (module, name) in (("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")):
            return self._reconstructor
        if (module, name) in (("builtins", "object"), ("__builtin__", "object")):
            return object
        raise UnsafePickleError(
            f"{self.source}: refused to load the global {module}.{name}; a tutorial vocabulary "
            "pickle may only hold a Vocabulary object (or a dict) of word2idx, idx2word and idx"
        )

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        if cls is not self.stand_in or base is not object or state is not None:
            raise UnsafePickleError(
                f"{self.source}: copyreg._reconstructor may only rebuild the Vocabulary object, "
                f"got the arguments ({cls!r:.60}, {base!r:.60}, {state!r:.60})"
            )
        return self.stand_in()


def load_tutorial_vocab(path: str | Path) -> Vocabulary:
    """Return the native vocabulary of the tutorial's vocab.pkl, words in id order.

    The pickle is read with an unpickler that resolves only a class named ``Vocabulary``
    (to a stand-in that holds plain data) and what protocols 0-5 need to rebuild such an
    object; any other global raises :class:`UnsafePickleError` (a ``pickle.UnpicklingError``)
    naming it, before anything runs. A pickled dict with the same keys is accepted too.
    The state must map words to ids 0..n-1 and back, consistently, with <pad>, <start>,
    <end>, <unk> at ids 0-3 (see :func:`vocabulary_from_state`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tutorial vocabulary pickle not found: {path}")
    with path.open("rb") as f:
        unpickler = _RestrictedUnpickler(f, str(path))
        try:
            obj = unpickler.load()
        except UnsafePickleError:
            raise
        except Exception as e:  # a damaged pickle fails in many ways; report them as one
            raise pickle.UnpicklingError(
                f"{path} is not a readable vocabulary pickle: {type(e).__name__}: {e}"
            ) from e
    if type(obj) is unpickler.stand_in:
        state = vars(obj)
    elif type(obj) is dict:
        state = obj
    else:
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a tutorial Vocabulary or a dict")
    return vocabulary_from_state(state, str(path))


def vocabulary_from_state(state: Mapping[str, Any], source: str = "the vocabulary") -> Vocabulary:
    """Return the native vocabulary of a tutorial Vocabulary's attributes (word2idx, idx2word, idx).

    ValueError naming the problem unless both maps are plain str<->int dicts that agree,
    the ids are 0..n-1, and ids 0-3 are <pad>, <start>, <end>, <unk>.
    """
    word2idx, idx2word = state.get("word2idx"), state.get("idx2word")
    if type(word2idx) is not dict or type(idx2word) is not dict:
        raise ValueError(
            f"{source}: a tutorial vocabulary needs dicts word2idx and idx2word, got "
            f"{type(word2idx).__name__} and {type(idx2word).__name__}"
        )
    bad = [(w, i) for w, i in word2idx.items() if type(w) is not str or type(i) is not int]
    if bad:
        raise ValueError(f"{source}: word2idx must map str to int; {len(bad)} entries do not, e.g. {bad[0]!r:.120}")
    bad = [(i, w) for i, w in idx2word.items() if type(i) is not int or type(w) is not str or not w]
    if bad:
        raise ValueError(
            f"{source}: idx2word must map int to a non-empty str; {len(bad)} entries do not, e.g. {bad[0]!r:.120}"
        )
    n = len(idx2word)
    if set(idx2word) != set(range(n)):
        outside = sorted(set(idx2word) - set(range(n)))
        raise ValueError(f"{source}: ids must be 0..{n - 1} without gaps; found ids {outside[:_SHOWN]} outside it")
    disagree = [w for w, i in word2idx.items() if idx2word.get(i) != w]
    disagree += [w for i, w in idx2word.items() if word2idx.get(w) != i]
    if disagree or len(word2idx) != n:
        raise ValueError(
            f"{source}: word2idx ({len(word2idx)} words) and idx2word ({n} ids) disagree, "
            f"e.g. on {disagree[:_SHOWN]!r:.200}"
        )
    if "idx" in state and state["idx"] != n:
        raise ValueError(f"{source}: idx (the next free id) is {state['idx']!r}, but there are {n} words")
    head = tuple(idx2word.get(i) for i in range(len(SPECIALS)))
    if head != SPECIALS:
        raise ValueError(
            f"{source}: ids 0-3 must be {', '.join(SPECIALS)} as in the tutorial's build_vocab.py, "
            f"got {', '.join(map(repr, head))}"
        )
    return Vocabulary(idx2word[i] for i in range(len(SPECIALS), n))


# --- The weights ------------------------------------------------------------------------


def import_tutorial_checkpoint(
    encoder_path: str | Path | Mapping[str, torch.Tensor],
    decoder_path: str | Path | Mapping[str, torch.Tensor],
    vocab_path: str | Path | Vocabulary,
    *,
    backbone: str = "resnet152",
    image_size: int = 224,
    map_location: str | torch.device = "cpu",
) -> ShowAndTell:
    """Return the tutorial's captioner as a native ShowAndTell, in eval mode, on `map_location`.

    `encoder_path` / `decoder_path` are the tutorial's ``torch.save(model.state_dict())``
    files (read with ``weights_only=True``, so they run no code) or already loaded state
    dicts; `vocab_path` is its vocab.pkl (see :func:`load_tutorial_vocab`) or a Vocabulary.
    `backbone` is the torchvision ResNet the tutorial's encoder was built on (resnet152 in
    the tutorial). The embedding and hidden sizes, the number of LSTM layers and the
    vocabulary size are read from the weights' shapes; every tensor must find its place,
    otherwise ValueError lists the missing, unexpected and mis-shaped keys.
    """
    if not isinstance(backbone, str) or not backbone.startswith(RESNET_FAMILIES):
        raise ValueError(
            "the tutorial's EncoderCNN is a torchvision ResNet; backbone must name one "
            f"({', '.join(f'{f}*' for f in RESNET_FAMILIES)}, e.g. 'resnet152'), got {backbone!r}"
        )
    encoder = _state_dict(encoder_path, "encoder", map_location)
    decoder = _state_dict(decoder_path, "decoder", map_location)
    vocab = vocab_path if isinstance(vocab_path, Vocabulary) else load_tutorial_vocab(vocab_path)

    embed_dim, features = _shape(encoder, "linear.weight", "encoder")
    words, word_dim = _shape(decoder, "embed.weight", "decoder")
    _, hidden_dim = _shape(decoder, "lstm.weight_hh_l0", "decoder")
    outputs, _ = _shape(decoder, "linear.weight", "decoder")
    if not len(vocab) == words == outputs:
        raise ValueError(
            f"the vocabulary has {len(vocab)} words, but the decoder's embedding has {words} rows and "
            f"its output layer {outputs}: the vocabulary pickle does not belong to this decoder"
        )
    if word_dim != embed_dim:
        raise ValueError(
            f"the encoder projects images to {embed_dim} values but the decoder embeds words in "
            f"{word_dim}: the encoder and decoder checkpoints are not from the same training run"
        )
    # Without any lstm.weight_ih_l<k>, one layer is built and the load names the missing keys.
    layers = 1 + max((int(m.group(1)) for m in map(_LSTM_LAYER.match, decoder) if m), default=0)
    model = ShowAndTell(
        vocab, backbone, pretrained=False, embed_dim=embed_dim, hidden_dim=hidden_dim,
        image_size=image_size, pool="avg", image_norm="batchnorm", lstm_layers=layers,
    )
    if model.encoder.out_channels != features:
        raise ValueError(
            f"the encoder's linear layer takes {features} features but {backbone} gives "
            f"{model.encoder.out_channels}: pass the backbone the tutorial was trained with "
            "(resnet18/34 give 512 features, resnet50 and deeper 2048)"
        )
    children = [name for name, _ in model.encoder.body.named_children()]
    state = _renamed(encoder, decoder, children)
    _check_fit(state, model, backbone, children)
    model.load_state_dict({native: tensor for native, (_, tensor) in state.items()}, strict=True)
    return model.to(map_location).eval()


def _state_dict(
    source: str | Path | Mapping[str, torch.Tensor], what: str, map_location: str | torch.device
) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"tutorial {what} checkpoint not found: {path}")
        state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"the tutorial {what} checkpoint must be a state_dict (parameter names to tensors), "
            f"got a {type(state).__name__}"
        )
    return dict(state)


def _shape(state: Mapping[str, torch.Tensor], key: str, what: str) -> tuple[int, int]:
    if key not in state or state[key].dim() != 2:
        found = tuple(state[key].shape) if key in state else "no such key"
        raise ValueError(
            f"the tutorial {what} checkpoint needs a 2-D {key!r} ({found}); its keys start with "
            f"{sorted(state)[:_SHOWN]}"
        )
    rows, columns = state[key].shape
    return int(rows), int(columns)


def _renamed(
    encoder: Mapping[str, torch.Tensor], decoder: Mapping[str, torch.Tensor], children: list[str]
) -> dict[str, tuple[str, torch.Tensor]]:
    """Return native name -> (tutorial name, tensor); unmappable keys keep a '?' name."""
    state: dict[str, tuple[str, torch.Tensor]] = {}
    for part, tensors in (("encoder", encoder), ("decoder", decoder)):
        for key, tensor in tensors.items():
            native = _native_name(part, key, children)
            state[native or f"?{part}.{key}"] = (f"{part}:{key}", tensor)
    return state


def _native_name(part: str, key: str, children: list[str]) -> str | None:
    head, _, rest = key.partition(".")
    if part == "encoder" and head == "resnet":
        index, _, rest = rest.partition(".")
        if index.isdigit() and int(index) < len(children):
            return f"encoder.body.{children[int(index)]}.{rest}"
        return None
    prefixes = _ENCODER_PREFIXES if part == "encoder" else _DECODER_PREFIXES
    return f"{prefixes[head]}.{rest}" if head in prefixes and rest else None


def _tutorial_name(native: str, children: list[str]) -> str:
    head, _, rest = native.partition(".")
    if head == "encoder":
        child, _, rest = rest.removeprefix("body.").partition(".")
        return f"encoder:resnet.{children.index(child)}.{rest}"
    for part, prefixes in (("encoder", _ENCODER_PREFIXES), ("decoder", _DECODER_PREFIXES)):
        for tutorial, ours in prefixes.items():
            if head == ours:
                return f"{part}:{tutorial}.{rest}"
    return native


def _check_fit(
    state: dict[str, tuple[str, torch.Tensor]], model: ShowAndTell, backbone: str, children: list[str]
) -> None:
    expected = model.state_dict()
    for key in expected.keys() - state.keys():
        # PyTorch before 0.4.1 saved no num_batches_tracked; it only counts training steps
        # (and matters only with momentum=None), so the model's own zero stands in.
        if key.endswith(".num_batches_tracked"):
            state[key] = (_tutorial_name(key, children), expected[key])
    missing = [_tutorial_name(k, children) for k in expected if k not in state]
    unexpected = [source for k, (source, _) in state.items() if k not in expected]
    mismatched = [
        f"{source} {tuple(t.shape)} (expected {tuple(expected[k].shape)})"
        for k, (source, t) in state.items()
        if k in expected and t.shape != expected[k].shape
    ]
    problems = [
        f"{label}: {', '.join(keys[:_SHOWN])}" + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    ]
    if problems:
        layers = model.config["lstm_layers"]
        hint = ""
        if any(k.startswith("encoder:resnet.") for k in [*missing, *unexpected, *mismatched]):
            hint = f"; was the tutorial's encoder built on {backbone}? Pass its ResNet as `backbone`"
        raise ValueError(
            f"the tutorial checkpoint does not fit a Show-and-Tell model on {backbone} "
            f"(embed {model.config['embed_dim']}, hidden {model.config['hidden_dim']}, "
            f"{layers} LSTM layer{'s' if layers > 1 else ''}): " + "; ".join(problems) + hint
        )


__all__ = ["UnsafePickleError", "import_tutorial_checkpoint", "load_tutorial_vocab", "vocabulary_from_state"]

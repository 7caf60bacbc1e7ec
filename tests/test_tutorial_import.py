"""Importing the PyTorch tutorial's Show and Tell: same numbers, same maps, no code run.

The tutorial (yunjey/pytorch-tutorial, tutorials/03-advanced/image_captioning) is
re-implemented here as its model.py and build_vocab.py write it, and is the reference.
"""

from __future__ import annotations

import builtins
import copyreg
import json
import os
import pickle
import runpy
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torchvision import models

import vlcam
from vlcam import text
from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.adapters.show_and_tell_tutorial import import_tutorial_checkpoint, load_tutorial_vocab
from vlcam.text import END, PAD, START

REPO = Path(__file__).resolve().parents[1]
WORDS = ["a", "man", "riding", "horse", "on", "the", "beach", "dog", "sitting", "in", "grass", "red", "bus", "."]
CAPTIONS = ["a man riding a horse on the beach", "a dog sitting in the grass", "a red bus"]
SIZE = 64


# --- The tutorial, as its model.py and build_vocab.py write it ----------------------------


class EncoderCNN(nn.Module):
    def __init__(self, embed_size: int, resnet: str = "resnet152") -> None:
        super().__init__()
        resnet = models.get_model(resnet, weights=None)
        modules = list(resnet.children())[:-1]
        self.resnet = nn.Sequential(*modules)
        self.linear = nn.Linear(resnet.fc.in_features, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.resnet(images)
        features = features.reshape(features.size(0), -1)
        return self.bn(self.linear(features))


class DecoderRNN(nn.Module):
    def __init__(self, embed_size: int, hidden_size: int, vocab_size: int, num_layers: int,
                 max_seq_length: int = 20) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)
        self.max_seg_length = max_seq_length

    def forward(self, features: torch.Tensor, captions: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        embeddings = self.embed(captions)
        embeddings = torch.cat((features.unsqueeze(1), embeddings), 1)
        packed = pack_padded_sequence(embeddings, lengths, batch_first=True)
        hiddens, _ = self.lstm(packed)
        return self.linear(hiddens[0])

    def sample(self, features: torch.Tensor, states: tuple | None = None) -> torch.Tensor:
        sampled_ids = []
        inputs = features.unsqueeze(1)
        for _ in range(self.max_seg_length):
            hiddens, states = self.lstm(inputs, states)
            outputs = self.linear(hiddens.squeeze(1))
            _, predicted = outputs.max(1)
            sampled_ids.append(predicted)
            inputs = self.embed(predicted).unsqueeze(1)
        return torch.stack(sampled_ids, 1)


class Vocabulary:
    """build_vocab.py's class; its pickles name it build_vocab.Vocabulary or __main__.Vocabulary."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: dict[int, str] = {}
        self.idx = 0

    def add_word(self, word: str) -> None:
        if word not in self.word2idx:
            self.word2idx[word] = self.idx
            self.idx2word[self.idx] = word
            self.idx += 1


def tutorial_vocab(words: list[str] = WORDS) -> Vocabulary:
    vocab = Vocabulary()
    for word in ["<pad>", "<start>", "<end>", "<unk>", *words]:
        vocab.add_word(word)
    return vocab


def dump_vocab(path: Path, obj: object, module: str = "build_vocab", protocol: int = 4) -> Path:
    """Pickle `obj` as the tutorial does, its Vocabulary class living in `module`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Vocabulary, "__module__", module)
        if module not in sys.modules:
            mp.setitem(sys.modules, module, types.ModuleType(module))
        mp.setattr(sys.modules[module], "Vocabulary", Vocabulary, raising=False)
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def make_tutorial(resnet: str = "resnet18", layers: int = 1, embed: int = 32, hidden: int = 48,
                  seed: int = 0) -> SimpleNamespace:
    """Return a tutorial encoder and decoder with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    encoder = EncoderCNN(embed, resnet)
    decoder = DecoderRNN(embed, hidden, len(WORDS) + 4, layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(3000)
        # The image vector's BN gets statistics near those of real projected features, so
        # the decoder sees values of order one, as after training.
        raw = encoder.linear(encoder.resnet.eval()(images(4, seed=99)).flatten(1))
        encoder.bn.running_mean.copy_(raw.mean(0) + 0.1 * torch.randn(embed, generator=g))
        encoder.bn.running_var.copy_(raw.var(0) * (0.5 + torch.rand(embed, generator=g)))
        encoder.bn.weight.copy_(1 + 0.3 * torch.randn(embed, generator=g))
        encoder.bn.bias.copy_(0.3 * torch.randn(embed, generator=g))
    return SimpleNamespace(encoder=encoder.eval(), decoder=decoder.eval(), resnet=resnet)


def save_tutorial(tutorial: SimpleNamespace, folder: Path) -> SimpleNamespace:
    """Return the paths of the tutorial's three files, written as its train.py and build_vocab.py do."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(tutorial.encoder.state_dict(), folder / "encoder-5-3000.ckpt")
    torch.save(tutorial.decoder.state_dict(), folder / "decoder-5-3000.ckpt")
    dump_vocab(folder / "vocab.pkl", tutorial_vocab())
    return SimpleNamespace(encoder=folder / "encoder-5-3000.ckpt", decoder=folder / "decoder-5-3000.ckpt",
                           vocab=folder / "vocab.pkl")


def import_files(files: SimpleNamespace, resnet: str = "resnet18") -> ShowAndTell:
    return import_tutorial_checkpoint(files.encoder, files.decoder, files.vocab, backbone=resnet, image_size=SIZE)


def tutorial_logprobs(tutorial: SimpleNamespace, image: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Return the tutorial's log p of each of <start> w1 .. wn <end>, as train.py's forward scores them."""
    captions = torch.tensor([tokens])
    with torch.no_grad():
        outputs = tutorial.decoder(tutorial.encoder(image), captions, [len(tokens)])
    return outputs.log_softmax(-1).gather(1, captions[0, :, None])[:, 0]


@pytest.fixture(scope="module")
def tutorial() -> SimpleNamespace:
    return make_tutorial()


@pytest.fixture(scope="module")
def files(tutorial, tmp_path_factory) -> SimpleNamespace:
    return save_tutorial(tutorial, tmp_path_factory.mktemp("tutorial"))


@pytest.fixture(scope="module")
def imported(files) -> ShowAndTell:
    return import_files(files)


# --- Same numbers ---------------------------------------------------------------------------


def check_logprobs_match(tutorial: SimpleNamespace, model: ShowAndTell) -> None:
    x = images()
    tokens = model.encode_captions(CAPTIONS)
    with torch.no_grad():
        ours = model.word_logprobs(x, tokens)
    for b, caption in enumerate(CAPTIONS):
        ids = model.vocab.encode(caption)
        reference = tutorial_logprobs(tutorial, x[b:b + 1], ids)
        # The tutorial's first output (from the image alone) predicts <start>; vlcam's
        # token t scores the word after <start> w1 .. wt.
        torch.testing.assert_close(ours[b, :len(ids) - 1], reference[1:], atol=1e-5, rtol=0)
        assert (ours[b, len(ids) - 1:] == 0).all()


def test_imported_model_has_the_tutorial_config_and_vocabulary(imported, tutorial) -> None:
    assert imported.vocab.words == [tutorial_vocab().idx2word[i] for i in range(len(WORDS) + 4)]
    assert {k: imported.config[k] for k in ("backbone", "embed_dim", "hidden_dim", "lstm_layers", "pool",
                                            "image_norm", "image_size")} == {
        "backbone": "resnet18", "embed_dim": 32, "hidden_dim": 48, "lstm_layers": 1, "pool": "avg",
        "image_norm": "batchnorm", "image_size": SIZE}
    assert not imported.training and imported.default_layer == "encoder.body.layer4"
    # The <pad> row is copied as it is: the tutorial's Embedding has no padding_idx.
    torch.testing.assert_close(imported.word_embed.weight[PAD], tutorial.decoder.embed.weight[PAD], rtol=0, atol=0)
    assert imported.word_embed.weight[PAD].abs().sum() > 0
    torch.testing.assert_close(imported.image_norm.running_var, tutorial.encoder.bn.running_var, rtol=0, atol=0)
    assert int(imported.encoder.body.layer1[0].bn1.num_batches_tracked) == 3000


@pytest.mark.parametrize("layers", [1, 2])
def test_token_logprobs_equal_the_tutorial_modules(tmp_path, layers) -> None:
    tutorial = make_tutorial(layers=layers, seed=layers)
    model = import_files(save_tutorial(tutorial, tmp_path))
    assert model.config["lstm_layers"] == layers
    check_logprobs_match(tutorial, model)


def test_the_resnet152_layout_imports_and_scores_as_the_tutorial() -> None:
    tutorial = make_tutorial("resnet152", embed=16, hidden=16, seed=5)
    encoder = tutorial.encoder.state_dict()
    assert {k.split(".")[1] for k in encoder if k.startswith("resnet.")} == {"0", "1", "4", "5", "6", "7"}
    # Loaded state dicts, not files: the 240 MB round trip through torch.save is the
    # resnet18 tests' job.
    model = import_tutorial_checkpoint(encoder, tutorial.decoder.state_dict(), text.Vocabulary(WORDS),
                                       backbone="resnet152", image_size=SIZE)
    assert len(model.encoder.body.layer3) == 36
    torch.testing.assert_close(model.encoder.body.layer3[35].conv3.weight, tutorial.encoder.resnet[6][35].conv3.weight,
                               rtol=0, atol=0)
    check_logprobs_match(tutorial, model)


def with_start_only_first(tutorial: SimpleNamespace) -> SimpleNamespace:
    """Make the decoder behave as a trained one: <start> wins at t = 0 only, <pad> never.

    Embedding dimension 0 is +5 for every word while the image vector's is -5 (its BN has
    weight 0, bias -5); LSTM unit 0 copies the sign of that input (input and output gates
    open, forget gate shut, g = tanh(-10 x0)), and the <start> logit reads unit 0.
    """
    d, e, h = tutorial.decoder, tutorial.encoder, tutorial.decoder.lstm.hidden_size
    with torch.no_grad():
        e.bn.weight[0], e.bn.bias[0] = 0.0, -5.0
        d.embed.weight[:, 0] = 5.0
        gates = {"i": 0, "f": h, "g": 2 * h, "o": 3 * h}
        d.lstm.bias_ih_l0[gates["i"]], d.lstm.bias_ih_l0[gates["f"]], d.lstm.bias_ih_l0[gates["o"]] = 20.0, -20.0, 20.0
        d.lstm.weight_ih_l0[gates["g"], 0] = -10.0
        d.linear.weight[START, 0], d.linear.bias[START] = 60.0, 0.0
        d.linear.bias[PAD] = -60.0
    return tutorial


def test_greedy_generation_equals_the_tutorial_sample(tmp_path) -> None:
    tutorial = with_start_only_first(make_tutorial(seed=7))
    model = import_files(save_tutorial(tutorial, tmp_path))
    x = images(6, seed=7)
    with torch.no_grad():
        sampled = tutorial.decoder.sample(tutorial.encoder(x))
    assert (sampled[:, 0] == START).all() and not (sampled[:, 1:] == START).any()
    expected = []
    for row in sampled[:, 1:].tolist():
        expected.append(row[:row.index(END)] if END in row else row)
    generated = model.generate(x, max_len=sampled.shape[1] - 1)
    assert generated == expected
    assert sum(len(c) for c in generated) >= 6 and len({tuple(c) for c in generated}) > 1


# --- Same maps ------------------------------------------------------------------------------


class TutorialScorer(nn.Module):
    """The tutorial's modules, scoring one caption: log p of each word, then of the caption.

    EncoderCNN.forward runs its ResNet under no_grad, so this runs the same modules in the
    same order without it, for gradients to reach layer4.
    """

    def __init__(self, tutorial: SimpleNamespace, tokens: list[int]) -> None:
        super().__init__()
        self.encoder, self.decoder = tutorial.encoder, tutorial.decoder
        self.captions = torch.tensor([tokens])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.encoder.bn(self.encoder.linear(self.encoder.resnet(image).reshape(image.shape[0], -1)))
        outputs = self.decoder(features, self.captions, [self.captions.shape[1]])
        words = outputs.log_softmax(-1).gather(1, self.captions[0, :, None])[1:, 0]  # w1 .. wn, <end>
        return torch.cat([words, words.sum(0, keepdim=True)])[None]


def test_word_maps_equal_captum_gradcam_on_the_tutorial_modules(imported, tutorial) -> None:
    image = images(1, seed=3)[0]
    caption = CAPTIONS[0]
    explanation = vlcam.explain_caption(imported, image, caption)
    tokens = imported.vocab.encode(caption)
    scorer = TutorialScorer(tutorial, tokens)
    cam = LayerGradCam(scorer, tutorial.encoder.resnet[7])
    n = len(tokens) - 2

    def reference(target: int) -> torch.Tensor:
        raw = cam.attribute(image[None], target=target, relu_attributions=True)
        return LayerAttribution.interpolate(raw, (SIZE, SIZE), interpolate_mode="bilinear")[0, 0]

    expected = torch.stack([reference(i) for i in range(n)])
    assert explanation.word_maps.shape == (n, SIZE, SIZE) and expected.abs().amax(dim=(1, 2)).min() > 0
    torch.testing.assert_close(explanation.word_maps, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(explanation.caption_map, reference(n + 1), atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(explanation.token_logprobs, scorer(image[None])[0, :n], atol=1e-5, rtol=0)


# --- Checkpoints and the script -------------------------------------------------------------


def test_save_then_vlcam_load_gives_identical_outputs(tmp_path) -> None:
    tutorial = make_tutorial(layers=2, seed=2)
    model = import_files(save_tutorial(tutorial, tmp_path / "tutorial"))
    loaded = vlcam.load(model.save(tmp_path / "ckpt"))
    assert isinstance(loaded, ShowAndTell) and loaded.config == model.config
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["image_norm"] == "batchnorm"
    x, tokens = images(), model.encode_captions(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.word_logprobs(x, tokens), model.word_logprobs(x, tokens), rtol=0, atol=0)
    assert loaded.generate(x, max_len=8) == model.generate(x, max_len=8)
    assert loaded.generate(x, max_len=8, beam_size=3) == model.generate(x, max_len=8, beam_size=3)


def test_the_script_writes_a_checkpoint_that_vlcam_loads(files, imported, tmp_path, capsys) -> None:
    main = runpy.run_path(str(REPO / "scripts" / "import_show_and_tell.py"))["main"]
    out = tmp_path / "imported"
    assert main(["--encoder", str(files.encoder), "--decoder", str(files.decoder), "--vocab", str(files.vocab),
                 "--out", str(out), "--backbone", "resnet18", "--image-size", str(SIZE)]) == 0
    assert str(out) in capsys.readouterr().out
    loaded = vlcam.load(out)
    x, tokens = images(), imported.encode_captions(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.word_logprobs(x, tokens), imported.word_logprobs(x, tokens),
                                   rtol=0, atol=0)


def test_checkpoints_saved_before_the_new_options_load_as_before(tmp_path) -> None:
    torch.manual_seed(0)
    model = ShowAndTell(text.Vocabulary(WORDS), "compact", embed_dim=8, hidden_dim=8, image_size=32).eval()
    model.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert isinstance(model.image_norm, nn.Identity) and model.lstm.num_layers == 1
    del config["image_norm"], config["lstm_layers"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = ShowAndTell.load(tmp_path)
    x, tokens = torch.randn(2, 3, 32, 32), model.encode_captions(CAPTIONS[:2])
    torch.testing.assert_close(loaded(x, tokens), model(x, tokens), rtol=0, atol=0)
    assert loaded.config["image_norm"] == "none" and loaded.config["lstm_layers"] == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"image_norm": "layernorm"}, "image_norm must be one of.*'layernorm'"),
    ({"lstm_layers": 0}, "lstm_layers must be a positive int, got 0"),
    ({"lstm_layers": 1.5}, "lstm_layers must be a positive int, got 1.5"),
])
def test_bad_new_options_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ShowAndTell(text.Vocabulary(WORDS), "compact", **kwargs)


def test_old_checkpoints_without_num_batches_tracked_import(tutorial) -> None:
    # PyTorch before 0.4.1 (the tutorial's era) saved BatchNorm without this counter.
    encoder = {k: v for k, v in tutorial.encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = import_tutorial_checkpoint(encoder, tutorial.decoder.state_dict(), text.Vocabulary(WORDS),
                                       backbone="resnet18", image_size=SIZE)
    check_logprobs_match(tutorial, model)


def test_a_wrong_backbone_is_named(files) -> None:
    with pytest.raises(ValueError, match="takes 512 features but resnet50 gives 2048"):
        import_files(files, "resnet50")
    with pytest.raises(ValueError, match=r"missing: encoder:resnet\.4\.2\.conv1\.weight.*built on resnet34"):
        import_files(files, "resnet34")
    with pytest.raises(ValueError, match="torchvision ResNet.*'vgg16'"):
        import_files(files, "vgg16")


def test_unexpected_and_misshaped_keys_are_named(tutorial) -> None:
    encoder = dict(tutorial.encoder.state_dict())
    decoder = dict(tutorial.decoder.state_dict())
    encoder["resnet.9.weight"] = torch.zeros(1)
    decoder["lstm.bias_hh_l0"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"unexpected: encoder:resnet\.9\.weight.*shape mismatch: "
                                         r"decoder:lstm\.bias_hh_l0 \(5,\) \(expected \(192,\)\)"):
        import_tutorial_checkpoint(encoder, decoder, text.Vocabulary(WORDS), backbone="resnet18")


def test_a_vocabulary_of_another_size_than_the_decoder_is_refused(files, tmp_path) -> None:
    smaller = dump_vocab(tmp_path / "vocab.pkl", tutorial_vocab(WORDS[:-3]))
    with pytest.raises(ValueError, match="vocabulary has 15 words, but the decoder's embedding has 18 rows"):
        import_tutorial_checkpoint(files.encoder, files.decoder, smaller, backbone="resnet18")


# --- The vocabulary pickle ------------------------------------------------------------------


@pytest.mark.parametrize("module", ["build_vocab", "__main__"])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_vocab_pickles_of_every_protocol_load_in_id_order(tmp_path, module, protocol) -> None:
    vocab = load_tutorial_vocab(dump_vocab(tmp_path / "vocab.pkl", tutorial_vocab(), module, protocol))
    assert isinstance(vocab, text.Vocabulary) and vocab.words == list(text.SPECIALS) + WORDS
    assert vocab.index("horse") == tutorial_vocab().word2idx["horse"]


def test_a_pickled_dict_of_the_same_attributes_loads(tmp_path) -> None:
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(vars(tutorial_vocab())))
    assert load_tutorial_vocab(path).words == list(text.SPECIALS) + WORDS


class Payload:
    """An object whose unpickling calls `function(*args)`."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "subprocess.call"])
def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path, name) -> None:
    marker = tmp_path / "pwned"
    payload = payloads(marker)[name]
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(payload))
    refused = f"{payload.function.__module__}.{payload.function.__name__}"  # os.system is posix.system
    with pytest.raises(pickle.UnpicklingError, match=f"refused to load the global {refused}"):
        load_tutorial_vocab(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the payload is live: plain pickle runs it
    assert marker.exists()


def test_a_callable_smuggled_into_the_vocabulary_state_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    vocab = tutorial_vocab()
    vocab.idx2word[4] = Payload(builtins.eval, f"__import__('os').system('touch {marker}')")
    path = dump_vocab(tmp_path / "vocab.pkl", vocab)
    with pytest.raises(pickle.UnpicklingError, match="refused to load the global builtins.eval"):
        load_tutorial_vocab(path)
    assert not marker.exists()


def test_copyreg_reconstructor_only_rebuilds_the_vocabulary(tmp_path) -> None:
    path = dump_vocab(tmp_path / "vocab.pkl", Payload(copyreg._reconstructor, Vocabulary, Vocabulary, None))
    with pytest.raises(pickle.UnpicklingError, match="may only rebuild the Vocabulary object"):
        load_tutorial_vocab(path)


def _swap_start_end(v: Vocabulary) -> None:
    v.word2idx["<start>"], v.word2idx["<end>"] = 2, 1
    v.idx2word[1], v.idx2word[2] = "<end>", "<start>"


@pytest.mark.parametrize(("corrupt", "message"), [
    (_swap_start_end, "ids 0-3 must be <pad>, <start>, <end>, <unk>.*got '<pad>', '<end>', '<start>', '<unk>'"),
    (lambda v: v.idx2word.update({40: "zebra"}) or v.word2idx.update({"zebra": 40}), r"0\.\.18 without gaps.*\[40\]"),
    (lambda v: v.word2idx.update({"horse": 5}), "disagree.*'horse'"),
    (lambda v: v.word2idx.update({"horse": "7"}), "word2idx must map str to int.*'horse', '7'"),
    (lambda v: setattr(v, "idx2word", [*v.idx2word.values()]), "needs dicts word2idx and idx2word.*list"),
    (lambda v: setattr(v, "idx", 3), "idx .* is 3, but there are 18 words"),
])
def test_a_bad_vocabulary_state_gets_a_clear_error(tmp_path, corrupt, message) -> None:
    vocab = tutorial_vocab()
    corrupt(vocab)
    with pytest.raises(ValueError, match=message):
        load_tutorial_vocab(dump_vocab(tmp_path / "vocab.pkl", vocab))


def test_a_damaged_pickle_is_an_unpickling_error(tmp_path) -> None:
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(vars(tutorial_vocab()))[:40])
    with pytest.raises(pickle.UnpicklingError, match="not a readable vocabulary pickle"):
        load_tutorial_vocab(path)

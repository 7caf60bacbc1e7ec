"""Tokenisation and the vocabulary: what a caption becomes, and back."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlcam.text import END, PAD, START, UNK, Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation_and_space() -> None:
    assert tokenize("A Red BALL, left of the box!\n  ") == ["a", "red", "ball", "left", "of", "the", "box"]


def test_tokenize_keeps_word_internal_punctuation_and_splits_clitics() -> None:
    assert tokenize("The dog's toy -- it's red.") == ["the", "dog", "'s", "toy", "it", "'s", "red"]


@pytest.mark.parametrize("text", ["", "   \t\n", "...!?", "\x00\ud800\udfff", "Café NAÏVE 🐶", "😀" * 3])
def test_tokenize_survives_odd_unicode(text: str) -> None:
    tokens = tokenize(text)
    assert all(t and not t.isspace() for t in tokens)


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_tokenize_never_crashes_and_returns_lowercase_tokens(text: str) -> None:
    for token in tokenize(text):
        assert token == token.lower() and token.strip() == token and token


def test_tokenize_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="bytes"):
        tokenize(b"a ball")  # type: ignore[arg-type]


def test_import_vlcam_text_does_not_import_spacy() -> None:
    code = "import sys, vlcam.text; assert 'spacy' not in sys.modules, 'spacy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_special_tokens_have_fixed_ids() -> None:
    vocab = Vocabulary(["ball"])
    assert [vocab.index(w) for w in ("<pad>", "<start>", "<end>", "<unk>")] == [PAD, START, END, UNK] == [0, 1, 2, 3]
    assert vocab.index("ball") == 4 and vocab.word(4) == "ball" and len(vocab) == 5


def test_min_count_keeps_only_frequent_words_ordered_by_count() -> None:
    captions = ["a red ball", "a red box", "a blue ball", "a ball"]
    vocab = Vocabulary.from_captions(captions, min_count=2)
    assert vocab.words[4:] == ["a", "ball", "red"]
    assert "blue" not in vocab and "box" not in vocab
    assert len(Vocabulary.from_captions(captions, min_count=1)) == 4 + 5


def test_min_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_count.*0"):
        Vocabulary.from_captions(["a"], min_count=0)


def test_encode_wraps_in_start_end_and_decode_inverts_it() -> None:
    vocab = Vocabulary.from_captions(["a red ball on the left"], min_count=1)
    ids = vocab.encode("A red ball, on the LEFT.")
    assert ids[0] == START and ids[-1] == END
    assert vocab.decode([*ids, PAD, PAD]) == ["a", "red", "ball", "on", "the", "left"]
    assert vocab.encode("a ball", add_special=False) == [vocab.index("a"), vocab.index("ball")]


def test_a_decoded_caption_with_unknown_words_encodes_back_to_the_same_ids() -> None:
    vocab = Vocabulary(["a", "ball"])
    ids = [START, 4, UNK, 5, END]
    caption = " ".join(vocab.decode(ids))
    assert caption == "a <unk> ball"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vocab.encode(caption) == ids


def test_decode_stops_at_end() -> None:
    vocab = Vocabulary(["a", "ball"])
    assert vocab.decode([START, 4, 5, END, 4, 4]) == ["a", "ball"]


def test_unknown_words_become_unk_with_one_warning_naming_them() -> None:
    vocab = Vocabulary.from_captions(["a red ball"], min_count=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = vocab.encode("a zebra and a qux zebra")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'zebra'" in message and "'qux'" in message and "'and'" in message and "'a'" not in message
    assert ids == [START, vocab.index("a"), UNK, UNK, vocab.index("a"), UNK, UNK, END]


def test_encode_many_warns_once_for_the_whole_batch() -> None:
    vocab = Vocabulary(["a"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vocab.encode_many(["a zebra", "a qux"])
    assert len(caught) == 1 and "'zebra', 'qux'" in str(caught[0].message)


def test_encode_without_warning_is_silent() -> None:
    vocab = Vocabulary(["a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vocab.encode("a zebra", warn=False) == [START, 4, UNK, END]


def test_index_and_word_reject_unknowns_with_the_value() -> None:
    vocab = Vocabulary(["a"])
    with pytest.raises(KeyError, match="zebra"):
        vocab.index("zebra")
    with pytest.raises(IndexError, match="99"):
        vocab.word(99)


def test_json_round_trip_is_a_plain_list_of_words() -> None:
    vocab = Vocabulary.from_captions(["a red ball", "ein grüner Würfel", "a red ball"], min_count=1)
    text = vocab.to_json()
    assert json.loads(text) == vocab.words
    restored = Vocabulary.from_json(text)
    assert restored == vocab and restored.encode("ein red würfel") == vocab.encode("ein red würfel")


def test_from_json_rejects_a_list_without_the_special_tokens() -> None:
    with pytest.raises(ValueError, match="<pad>"):
        Vocabulary.from_json('["a", "ball"]')


def test_duplicate_words_are_rejected() -> None:
    with pytest.raises(ValueError, match="'ball'"):
        Vocabulary(["ball", "ball"])


def test_from_coco_reads_the_annotations(tmp_path) -> None:
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "A ball."},
                        {"id": 2, "image_id": 1, "caption": "a BALL and a box"}],
    }))
    assert Vocabulary.from_coco(path, min_count=2).words[4:] == ["a", "ball"]


def test_from_coco_names_a_missing_or_foreign_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Vocabulary.from_coco(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json.*annotations"):
        Vocabulary.from_coco(bad)

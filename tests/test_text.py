"""The offline text corpus, text files, the split, the vocabulary and bits per character (issue 14)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from isoplastic.errors import DataError
from isoplastic.text import (
    DEFAULT_CORPUS,
    STDLIB_CHARS,
    UNKNOWN,
    Vocabulary,
    bits_per_char,
    load_text,
    split_document,
    stdlib_documents,
    unigram_cross_entropy,
    unigram_entropy,
)
from isoplastic.train.lm import eval_windows, evaluate_text, random_starts, windows


@pytest.fixture(scope="module")
def corpus():
    return load_text()


def test_default_corpus_is_offline_deterministic_and_about_a_megabyte(corpus):
    docs = stdlib_documents()
    assert docs[0][0].startswith("pydoc_data.topics[")
    total = sum(len(t) for _, t in docs)
    assert total == STDLIB_CHARS  # every supported CPython ships more than that
    assert corpus.name == DEFAULT_CORPUS
    assert corpus.train.numel() + corpus.test.numel() == total
    assert corpus.documents == [(n, len(t)) for n, t in docs]
    again = load_text()
    assert torch.equal(again.train, corpus.train) and torch.equal(again.test, corpus.test)
    assert again.vocab == corpus.vocab


def test_split_holds_out_the_last_tenth_of_every_document(corpus):
    docs = stdlib_documents()
    parts = [split_document(t) for _, t in docs]
    assert corpus.vocab.decode(corpus.train) == "".join(p[0] for p in parts)
    n_test = sum(len(p[1]) for p in parts)
    assert corpus.test.numel() == n_test
    assert abs(n_test / (n_test + corpus.train.numel()) - 0.1) < 0.001
    assert split_document("abcdefghij") == ("abcdefghi", "j")
    assert split_document("a") == ("a", "")


def test_vocabulary_comes_from_training_text_with_unknown_fallback():
    vocab = Vocabulary.from_text("banana")
    assert vocab.chars == "abn" and len(vocab) == 4
    assert vocab.encode("nab").tolist() == [3, 1, 2]
    assert vocab.encode("cab").tolist() == [UNKNOWN, 1, 2]
    assert vocab.decode([3, 1, 0]) == "na\ufffd"
    with pytest.raises(DataError, match="outside 0..3"):
        vocab.decode([4])


def test_text_file_round_trip_and_unknown_held_out_characters(tmp_path):
    text = "abcab" * 18 + "xyz" * 4  # 102 characters; the last 10 are "zxyzxyzxyz"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    data = load_text(str(path))
    assert data.name == "t.txt"
    assert data.train.numel() == 92 and data.test.numel() == 10
    assert data.vocab.chars == "abcxy"  # "z" occurs only in the held-out tail
    assert data.n_unknown == 4
    assert data.test.tolist().count(UNKNOWN) == 4
    assert data.vocab.decode(data.train) == text[:92]
    assert data.unigram_bpc == pytest.approx(unigram_entropy(text[:92]))


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + ("hello world " * 10).encode())
    assert "\ufeff" not in load_text(str(path)).vocab.chars


@pytest.mark.parametrize("case, match", [
    ("missing", "text file not found"),
    ("directory", "is not a file"),
    ("empty", "the file is empty"),
    ("latin1", "not UTF-8 text .*byte 3 is 0xe9.*iconv"),
    ("one char", "too few to hold out"),
])
def test_bad_text_files_are_refused_with_the_fix(tmp_path, case, match):
    path = tmp_path / "bad.txt"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "latin1":
        path.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    elif case == "one char":
        path.write_text("a")
    with pytest.raises(DataError, match=match):
        load_text(str(path))


def test_text_too_short_for_the_context_names_the_needed_length(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("x" * 200)
    data = load_text(str(path))
    data.check_context(19)  # 20 held-out characters hold one window of 19 + 1
    with pytest.raises(DataError, match=r"held-out text has 20 characters.*at least 210 "
                                        r"characters.*--context-length"):
        data.check_context(20)


def test_unigram_entropy_and_cross_entropy_by_hand():
    assert unigram_entropy("aaab") == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert unigram_entropy("aaaa") == 0
    # train "aab": counts a 2, b 1; V = 2 characters + unknown; N + V + 1 = 6
    want = -(math.log2(3 / 6) + math.log2(2 / 6) + math.log2(1 / 6)) / 3
    assert unigram_cross_entropy("aab", "abc") == pytest.approx(want)
    with pytest.raises(DataError, match="empty"):
        unigram_entropy("")


def test_bits_per_char_is_mean_cross_entropy_in_nats_over_ln2():
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    # a model predicting fixed probabilities: bpc by hand from the probabilities of the targets
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    targets = torch.tensor([[0, 1, 2, 3, 0, 0]])

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return probs.log().expand(*x.shape, 4)

    by_hand = -sum(math.log2(float(probs[t])) for t in targets[0].tolist()) / 6
    got = evaluate_text(Fixed(), targets, targets)
    assert got["test_bpc"] == pytest.approx(by_hand, rel=1e-12)
    assert got["test_loss"] == pytest.approx(by_hand * math.log(2), rel=1e-12)
    assert got["test_bpc"] == pytest.approx(
        float(F.cross_entropy(probs.log().expand(6, 4), targets[0])) / math.log(2))
    assert got["test_accuracy"] == pytest.approx(3 / 6)  # argmax is token 0


def test_windows_are_inputs_and_next_character_targets():
    tokens = torch.arange(10)
    x, y = windows(tokens, torch.tensor([0, 5]), 4)
    assert x.tolist() == [[0, 1, 2, 3], [5, 6, 7, 8]]
    assert y.tolist() == [[1, 2, 3, 4], [6, 7, 8, 9]]
    x, y = eval_windows(tokens, 4)  # (10 - 1) // 4 = 2 windows, the tail dropped
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and y[-1].tolist() == [5, 6, 7, 8]
    starts = random_starts(10, 4, (1000,), torch.Generator().manual_seed(0))
    assert int(starts.min()) == 0 and int(starts.max()) == 5  # the last window ends at token 9
    with pytest.raises(ValueError, match="no window"):
        random_starts(4, 4, (1,), torch.Generator())

r"""Offline text for character-level language modelling: corpora, vocabulary, bits per character.

Nothing here touches the network. :func:`load_text` returns a :class:`TextData` holding the
training and held-out text as ``int64`` token tensors over a character vocabulary built from the
training text.

Sources (``name`` of :func:`load_text`):

``"stdlib"`` (the default corpus, :data:`DEFAULT_CORPUS`)
    Text shipped with every CPython, so it needs no download: the English documentation of
    ``pydoc_data.topics`` (the text ``help("if")`` prints; one document per topic, in sorted key
    order), then the source of the pure-Python standard-library modules of
    :data:`STDLIB_MODULES`, in that order, each one document, until :data:`STDLIB_CHARS`
    (one million) characters are reached (the last document is cut there). The corpus is
    deterministic for a given Python version; its content differs between versions
    (``pydoc_data.topics`` holds about 0.47 MB on 3.11 and grows in later versions, so fewer
    modules follow), and a module missing from a stripped installation is skipped.
    :attr:`TextData.documents` lists what was used.

a path to a text file
    Any UTF-8 file (for example ``FILE.txt``), read as one document. A missing path, a
    directory, a file that is not UTF-8 and one too short for the context length raise
    :class:`~isoplastic.errors.DataError` naming the problem and the fix.

The split is contiguous and deterministic: the last :data:`HELD_OUT` (10 %) of every document
is held out (for a file: its last 10 %), the first 90 % of every document is training text;
the training parts are joined in order, and likewise the held-out parts. No seed is involved.

**Vocabulary: characters, with an unknown-character fallback.** Token ``0`` is the unknown
character; tokens ``1..V-1`` are the distinct characters of the *training* text in code-point
order. A held-out character that never occurs in the training text is encoded as ``0``, so a
model can never be scored on a symbol it had no way to know (the held-out bits per character
count such a character as the event "unknown"; :attr:`TextData.n_unknown` says how many there
are, usually none). Characters rather than bytes, so that the unit of the reported bits per
character is a character even for non-ASCII text, at the price of a vocabulary that depends on
the training text (saved with every checkpoint).

**Bits per character.** A model's cross-entropy in nats per predicted character, divided by
``ln 2`` (:func:`bits_per_char`). The reference line is the *unigram entropy* of the training
text, ``H = -Σ_c p_c log₂ p_c`` with ``p_c`` the character frequencies (:func:`unigram_entropy`):
what a model that ignores context scores on its own training text. :func:`unigram_cross_entropy`
gives the held-out bits per character of that unigram model (add-one smoothed), the fair
comparison for a held-out figure.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import DataError

__all__ = [
    "DEFAULT_CORPUS",
    "HELD_OUT",
    "STDLIB_CHARS",
    "STDLIB_MODULES",
    "UNKNOWN",
    "TEXT_CORPORA",
    "TextData",
    "Vocabulary",
    "bits_per_char",
    "is_text_source",
    "load_text",
    "split_document",
    "stdlib_documents",
    "unigram_cross_entropy",
    "unigram_entropy",
]

#: The built-in corpus (no download, present in every CPython).
DEFAULT_CORPUS = "stdlib"
#: Names :func:`load_text` accepts besides a file path.
TEXT_CORPORA: tuple[str, ...] = (DEFAULT_CORPUS,)
#: Held-out fraction at the end of every document.
HELD_OUT = 0.1
#: Size of the ``"stdlib"`` corpus in characters (``pydoc_data.topics`` first, then modules).
STDLIB_CHARS = 1_000_000
#: Pure-Python standard-library modules appended after ``pydoc_data.topics``, in order (all
#: present from Python 3.10 on; a frozen or missing one is skipped).
STDLIB_MODULES: tuple[str, ...] = (
    "argparse", "typing", "inspect", "dataclasses", "enum", "functools", "collections",
    "pathlib", "subprocess", "tarfile", "zipfile", "logging", "textwrap", "difflib", "shutil",
    "tempfile", "configparser", "statistics", "random", "string", "heapq", "fractions",
    "calendar", "csv", "pprint", "ast", "doctest", "pydoc", "threading",
)
#: Index of the unknown character in every :class:`Vocabulary`.
UNKNOWN = 0


def bits_per_char(loss_nats: float | torch.Tensor) -> float:
    """Bits per character of a mean cross-entropy in nats: ``loss / ln 2``.

    Example:
        >>> round(bits_per_char(math.log(4)), 12)
        2.0
    """
    return float(loss_nats) / math.log(2)


def unigram_entropy(text: str) -> float:
    """``H = -Σ_c p_c log₂ p_c`` (bits per character) of the character frequencies of ``text``.

    Example:
        >>> unigram_entropy("abab")
        1.0
    """
    if not text:
        raise DataError("unigram_entropy: empty text; pass at least one character")
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def unigram_cross_entropy(train: str, test: str) -> float:
    """Held-out bits per character of the add-one smoothed unigram model of ``train``.

    ``q_c = (count_c + 1) / (N + V + 1)`` over the ``V`` training characters plus one unknown
    class (every character absent from ``train``); returns ``-mean_{c ∈ test} log₂ q_c``.
    """
    if not train or not test:
        raise DataError("unigram_cross_entropy: empty text; pass non-empty train and test text")
    counts = Counter(train)
    total = len(train) + len(counts) + 1
    test_counts = Counter(test)
    bits = sum(k * -math.log2((counts.get(c, 0) + 1) / total) for c, k in test_counts.items())
    return bits / len(test)


@dataclass(frozen=True)
class Vocabulary:
    """Characters ``chars[i]`` for tokens ``i = 1..len(chars)``; token 0 is the unknown one.

    Attributes:
        chars: the distinct training characters in code-point order (a ``str``).
    """

    chars: str

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        """The number of tokens ``V`` (the characters plus the unknown token)."""
        return len(self.chars) + 1

    def encode(self, text: str) -> torch.Tensor:
        """``int64`` tokens ``(len(text),)``; unseen characters become :data:`UNKNOWN`."""
        index = {c: i + 1 for i, c in enumerate(self.chars)}
        return torch.tensor([index.get(c, UNKNOWN) for c in text], dtype=torch.int64)

    def decode(self, tokens: torch.Tensor | Sequence[int], unknown: str = "\ufffd") -> str:
        """The text of ``tokens`` (any shape, read in order); token 0 becomes ``unknown``."""
        ids = torch.as_tensor(tokens).reshape(-1).tolist()
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise DataError(f"Vocabulary.decode: token {bad[0]} is outside 0..{len(self) - 1}")
        return "".join(unknown if i == UNKNOWN else self.chars[i - 1] for i in ids)


@dataclass(repr=False)
class TextData:
    """A character-level corpus split into training and held-out tokens.

    Attributes:
        name: the corpus name or the file's name.
        train, test: ``int64`` tokens ``(N_train,)`` and ``(N_test,)`` in ``0..V-1``.
        vocab: the :class:`Vocabulary` (built from the training text).
        unigram_bpc: unigram entropy of the training text (bits per character).
        unigram_test_bpc: held-out bits per character of the smoothed unigram model.
        n_unknown: held-out characters absent from the training text (encoded as 0).
        documents: ``(document name, characters)`` of every document used, in order.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    vocab: Vocabulary
    unigram_bpc: float
    unigram_test_bpc: float
    n_unknown: int = 0
    documents: list[tuple[str, int]] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"TextData(name={self.name!r}, n_train={self.train.numel()}, "
                f"n_test={self.test.numel()}, vocab_size={self.vocab_size}, "
                f"unigram_bpc={self.unigram_bpc:.3f})")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def check_context(self, context_length: int) -> None:
        """Raise :class:`DataError` unless both splits hold a window of ``context_length + 1``
        tokens (inputs and their next-character targets)."""
        need = context_length + 1
        for split, tokens in (("training", self.train), ("held-out", self.test)):
            if tokens.numel() < need:
                total = self.train.numel() + self.test.numel()
                raise DataError(
                    f"{self.name}: the {split} text has {tokens.numel()} characters, fewer than "
                    f"one window of context length {context_length} + 1; the text has {total} "
                    f"characters and {HELD_OUT:.0%} of it is held out, so it needs at least "
                    f"{math.ceil(need / HELD_OUT)} characters - use a longer text or a shorter "
                    f"--context-length")

    def truncated(self, n_train: int | None = None, n_test: int | None = None) -> TextData:
        """The first ``n_train`` training and ``n_test`` held-out tokens (``None``: all); the
        vocabulary and the unigram figures stay those of the full corpus."""
        for label, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and n < 1:
                raise DataError(f"truncated: {label}={n}; pass a count >= 1 or None")
        return TextData(self.name, self.train[:n_train], self.test[:n_test], self.vocab,
                        self.unigram_bpc, self.unigram_test_bpc, self.n_unknown,
                        list(self.documents))


def split_document(text: str, held_out: float = HELD_OUT) -> tuple[str, str]:
    """``(first part, last part)`` of ``text``, the last ``round(held_out * len)`` characters
    held out (a document of one character stays in training)."""
    n_test = round(held_out * len(text))
    return text[: len(text) - n_test], text[len(text) - n_test:]


def stdlib_documents(limit: int = STDLIB_CHARS) -> list[tuple[str, str]]:
    """``(name, text)`` of the ``"stdlib"`` corpus, at most ``limit`` characters in all."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # pragma: no cover - part of every CPython
        raise DataError(f"the stdlib corpus needs pydoc_data.topics, which this Python lacks "
                        f"({exc}); pass a text file instead (--dataset FILE.txt)") from exc
    docs = [(f"pydoc_data.topics[{key!r}]", topics[key]) for key in sorted(topics)]
    for module in STDLIB_MODULES:
        spec = importlib.util.find_spec(module)
        origin = None if spec is None else spec.origin
        if origin is None or not origin.endswith(".py") or not Path(origin).is_file():
            continue  # frozen, built in or stripped from this installation
        docs.append((module, Path(origin).read_text(encoding="utf-8")))
    out, total = [], 0
    for name, text in docs:
        if total >= limit:
            break
        text = text[: limit - total]
        out.append((name, text))
        total += len(text)
    return out


def is_text_source(name: str) -> bool:
    """Whether :func:`load_text` reads ``name``: a corpus name or an existing file path."""
    return name in TEXT_CORPORA or Path(name).expanduser().is_file()


def _read_text_file(name: str) -> str:
    path = Path(name).expanduser()
    if not path.exists():
        raise DataError(f"text file not found: {str(path)!r}; pass an existing UTF-8 text file "
                        f"(--dataset FILE.txt) or the built-in corpus {DEFAULT_CORPUS!r}")
    if not path.is_file():
        raise DataError(f"{str(path)!r} is not a file; pass a UTF-8 text file "
                        "(--dataset FILE.txt)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}: "
                        f"{exc.reason}); convert it, e.g. `iconv -f latin1 -t utf-8 {path.name}`"
                        ) from exc
    if text.startswith("\ufeff"):  # a byte-order mark is not part of the text
        text = text[1:]
    if not text:
        raise DataError(f"{path}: the file is empty; pass a text file with content")
    return text


def load_text(name: str = DEFAULT_CORPUS) -> TextData:
    """The corpus ``name`` (:data:`TEXT_CORPORA`) or the UTF-8 file at path ``name``, split and
    encoded as the module docstring describes.

    Raises:
        DataError: the file is missing, not a file, empty or not UTF-8, or the text is too
            short to hold out any character.

    Example:
        >>> data = load_text()                  # doctest: +SKIP
        >>> data.vocab.decode(data.train[:12])  # doctest: +SKIP
    """
    if name in TEXT_CORPORA:
        docs = stdlib_documents()
        label = name
    else:
        docs = [(Path(name).name, _read_text_file(name))]
        label = Path(name).name
    parts = [split_document(text) for _, text in docs]
    train = "".join(p[0] for p in parts)
    test = "".join(p[1] for p in parts)
    if not train or not test:
        raise DataError(f"{label}: {len(train) + len(test)} characters are too few to hold out "
                        f"{HELD_OUT:.0%} of them; use a longer text")
    vocab = Vocabulary.from_text(train)
    test_tokens = vocab.encode(test)
    return TextData(
        name=label, train=vocab.encode(train), test=test_tokens, vocab=vocab,
        unigram_bpc=unigram_entropy(train), unigram_test_bpc=unigram_cross_entropy(train, test),
        n_unknown=int((test_tokens == UNKNOWN).sum()),
        documents=[(n, len(t)) for n, t in docs])

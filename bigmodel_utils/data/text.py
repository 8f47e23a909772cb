"""Text for language models: the two bundled corpora, three tokenisers, n-gram baselines
and training windows.

* **Corpora** (:func:`load_corpus`): Tiny Shakespeare (char-rnn's 1.1 MB file; public
  domain) and the quatrains (绝句) of the Complete Tang Poems, in simplified characters
  (public domain; collection MIT), both under ``data/`` and verified by SHA-256; in
  Colab they are fetched from the book's repository.
* **Tokenisers**, all with ``encode(text) -> ids`` and ``decode(ids) -> text``:
  :class:`CharTokenizer` (one id per character seen in training), :class:`ByteTokenizer`
  (the 256 UTF-8 byte values) and :class:`BPETokenizer` (byte-pair encoding trained from
  scratch, with deterministic merges). Build one by name with :func:`make_tokenizer`.
* **Baselines** (:func:`ngram_baselines`): the validation cross-entropy of guessing
  uniformly, of unigram and of bigram counts, in nats per token: what a language model
  must beat.
* **Windows** (:func:`windows`): random training windows of a token array, inputs and
  next-token targets.

Used in chapter 6 (and chapter 7).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from bigmodel_utils.validation import check_choice

CORPORA = {
    "shakespeare": (
        "tinyshakespeare.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "tang": (
        "tang_quatrains.tsv",
        "61e97ddd8312b371818525e3a8b69bba63f0790e25f461c10d2507214b04aa94",
    ),
}
"""Bundled corpora: name -> (file in data/, SHA-256 of the file)."""

TOKENIZERS = ("char", "byte", "bpe")
"""Names accepted by :func:`make_tokenizer`."""

POEM_BREAKS = "，。？！；"
"""The punctuation that ends a line of a Tang poem in the bundled corpus."""


@dataclass(frozen=True)
class Corpus:
    """A corpus split 90/10 in order, as nanoGPT splits Tiny Shakespeare: ``train`` and
    ``validation`` text.
    """

    name: str
    train: str
    validation: str
    source: str

    def __repr__(self) -> str:
        return (
            f"Corpus({self.name!r}: {len(self.train):,} training and {len(self.validation):,} validation "
            f"characters; {self.source})"
        )


def load_corpus(name: str, validation_fraction: float = 0.1) -> Corpus:
    """Return the bundled corpus ``name`` ("shakespeare" or "tang") split into training
    and validation text.

    Shakespeare is split at 90% of its characters, as nanoGPT does, so validation losses
    compare with its figures. The Tang poems are one poem per line (bodies only) and
    split at a poem boundary. Verified by SHA-256 (see :data:`CORPORA`).
    """
    from bigmodel_utils.data.files import book_file

    check_choice("name", name, tuple(CORPORA))
    if not 0 < validation_fraction < 1:
        raise ValueError(
            f"validation_fraction must be between 0 and 1, got {validation_fraction!r}"
        )
    filename, sha256 = CORPORA[name]
    path = book_file(filename, sha256)
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise ValueError(
            f"{path} does not match the SHA-256 this version of the book expects; restore it from git"
        )
    content = payload.decode("utf-8")
    if name == "shakespeare":
        cut = int(len(content) * (1 - validation_fraction))
        return Corpus(
            name, content[:cut], content[cut:], f"data/{filename}, SHA-256 verified"
        )
    poems = [
        row["body"] for row in csv.DictReader(io.StringIO(content), delimiter="\t")
    ]
    cut = int(len(poems) * (1 - validation_fraction))
    return Corpus(
        name,
        "\n".join(poems[:cut]) + "\n",
        "\n".join(poems[cut:]) + "\n",
        f"data/{filename} ({len(poems):,} poems), SHA-256 verified",
    )


# --------------------------------------------------------------------------------------
# Tokenisers
# --------------------------------------------------------------------------------------


class CharTokenizer:
    """One id per distinct character of the training text, in sorted order (nanoGPT's
    character level).
    """

    name = "char"

    def __init__(self, characters):
        self.characters = sorted(set(characters))
        self.index = {c: i for i, c in enumerate(self.characters)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:5])
            raise ValueError(
                f"text has {len(unknown)} character(s) outside the vocabulary of "
                f"{self.vocab_size}: {shown}; the vocabulary holds the training text's characters"
            )
        return np.array([self.index[c] for c in text], dtype=np.int32)

    def decode(self, ids) -> str:
        return "".join(self.characters[int(i)] for i in ids)


class ByteTokenizer:
    """The UTF-8 bytes of the text: a vocabulary of 256 that can encode any string."""

    name = "byte"
    vocab_size = 256

    @classmethod
    def train(cls, text: str = "") -> ByteTokenizer:
        return cls()

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def merge_pair(ids: np.ndarray, pair: tuple[int, int], new_id: int) -> np.ndarray:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids``, left to right,
    by ``new_id``: one merge of byte-pair encoding (chapter 6 shows it).
    """
    hits = np.flatnonzero((ids[:-1] == pair[0]) & (ids[1:] == pair[1]))
    if len(hits) == 0:
        return ids
    if pair[0] == pair[1]:
        # in "a a a" only the first "a a" merges: drop hits that overlap a kept one
        run_start = np.concatenate([[True], np.diff(hits) != 1])
        run_index = np.cumsum(run_start) - 1
        offset = hits - hits[run_start][run_index]
        hits = hits[offset % 2 == 0]
    out = ids.copy()
    out[hits] = new_id
    keep = np.ones(len(ids), dtype=bool)
    keep[hits + 1] = False
    return out[keep]


class BPETokenizer:
    """Byte-pair encoding (Sennrich et al. 2016) on UTF-8 bytes, trained from scratch.

    Training starts from the 256 byte values and repeatedly merges the most frequent
    adjacent pair into a new token; ties go to the smallest pair, so the merges are
    deterministic. Encoding replays the merges in the order they were learnt.
    """

    name = "bpe"

    def __init__(self, merges: list[tuple[int, int]]):
        self.merges = [tuple(m) for m in merges]
        self.pieces = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.pieces.append(self.pieces[a] + self.pieces[b])

    @classmethod
    def train(cls, text: str, vocab_size: int = 512) -> BPETokenizer:
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(
                "vocab_size must be an integer of at least 256 (the byte values), "
                f"got {vocab_size!r}"
            )
        ids = ByteTokenizer().encode(text).astype(np.int64)
        merges = []
        for new_id in range(256, vocab_size):
            if len(ids) < 2:
                break
            pair_keys = ids[:-1] * vocab_size + ids[1:]  # each adjacent pair as a number
            counts = np.bincount(pair_keys)
            # argmax returns the first maximum: of tied pairs, the smallest wins
            best = int(np.argmax(counts))
            if counts[best] < 2:
                break
            pair = (best // vocab_size, best % vocab_size)
            merges.append(pair)
            ids = merge_pair(ids, pair, new_id)
        return cls(merges)

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def encode(self, text: str) -> np.ndarray:
        ids = ByteTokenizer().encode(text)
        for new_id, pair in enumerate(self.merges, start=256):
            ids = merge_pair(ids, pair, new_id)
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        return b"".join(self.pieces[int(i)] for i in ids).decode(
            "utf-8", errors="replace"
        )


def make_tokenizer(name: str, text: str, vocab_size: int = 512):
    """Train the tokeniser ``name`` ("char", "byte" or "bpe") on ``text``;
    ``vocab_size`` is for BPE only.
    """
    check_choice("tokenizer", name, TOKENIZERS)
    if name == "char":
        return CharTokenizer.train(text)
    if name == "byte":
        return ByteTokenizer.train(text)
    return BPETokenizer.train(text, vocab_size)


def tokens_per_character(tokenizer, text: str) -> float:
    """How many tokens ``tokenizer`` spends on one character of ``text``, on average."""
    if not text:
        raise ValueError("text must not be empty")
    return len(tokenizer.encode(text)) / len(text)


# --------------------------------------------------------------------------------------
# Baselines and training windows
# --------------------------------------------------------------------------------------


def ngram_baselines(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab_size: int,
    prior_strength: float = 100.0,
) -> dict[str, float]:
    """Validation cross-entropy (nats per token) of three models that need no training
    loop.

    ``uniform``: every token equally likely, ``ln V``. ``unigram``: the token
    frequencies of the training ids (half a count added to each, so an unseen token
    costs a finite amount). ``bigram``: the frequency of each token after the one before
    it, smoothed towards the unigram frequencies with ``prior_strength`` pseudo-counts
    (Dirichlet smoothing): ``P(b | a) = (count(a, b) + prior_strength * P(b)) /
    (count(a) + prior_strength)``. Add-one smoothing would hand most of the probability
    to unseen pairs when the vocabulary has thousands of characters, as the Tang poems'
    has.
    """
    train_ids, val_ids = np.asarray(train_ids), np.asarray(val_ids)
    unigram = np.bincount(train_ids, minlength=vocab_size) + 0.5
    unigram = unigram / unigram.sum()
    pairs = np.zeros((vocab_size, vocab_size))
    np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1)
    previous, following = val_ids[:-1], val_ids[1:]
    bigram = (pairs[previous, following] + prior_strength * unigram[following]) / (
        pairs[previous].sum(axis=1) + prior_strength
    )
    return {
        "uniform": float(np.log(vocab_size)),
        "unigram": float(-np.mean(np.log(unigram[val_ids]))),
        "bigram": float(-np.mean(np.log(bigram))),
    }


def windows(
    ids: np.ndarray, context: int, count: int, seed: int = 0, start: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random windows of ``ids``: inputs ``(count, context)`` and targets
    shifted by one token.

    With ``start`` (a token id, such as the newline before each poem), every window
    starts at an occurrence of it, so the positions of a window line up with the poem's,
    as they do when generation starts from that token.
    """
    ids = np.asarray(ids, dtype=np.int32)
    if len(ids) <= context:
        raise ValueError(
            f"context must be shorter than the text ({len(ids)} tokens), got {context}"
        )
    rng = np.random.default_rng(seed)
    if start is None:
        starts = rng.integers(0, len(ids) - context, size=count)
    else:
        allowed = np.flatnonzero(ids[: len(ids) - context] == start)
        if len(allowed) == 0:
            raise ValueError(f"start token {start} never occurs early enough for a window")
        starts = rng.choice(allowed, size=count)
    offsets = starts[:, None] + np.arange(context + 1)[None, :]
    chunk = ids[offsets]
    return chunk[:, :-1], chunk[:, 1:]


# --------------------------------------------------------------------------------------
# Tang poem forms
# --------------------------------------------------------------------------------------


def is_quatrain(poem: str, line_length: int = 5) -> bool:
    """True when ``poem`` is four lines of ``line_length`` characters, each ended by
    punctuation.

    ``line_length=5`` is a 五言绝句 (five-character quatrain), ``7`` a 七言绝句.
    """
    if line_length not in (5, 7):
        raise ValueError(
            f"line_length must be 5 or 7 (characters per line of a quatrain), got {line_length!r}"
        )
    pattern = (f"[^{POEM_BREAKS}\\s]{{{line_length}}}[{POEM_BREAKS}]") * 4
    return re.fullmatch(pattern, poem.strip()) is not None


def quatrains(poems_text: str, line_length: int = 5) -> list[str]:
    """The poems of ``poems_text`` (one a line) that are quatrains of ``line_length``
    characters a line (:func:`is_quatrain`). Used in chapters 6 and 7."""
    return [poem for poem in poems_text.splitlines() if is_quatrain(poem, line_length)]


def form_counts(poems) -> Counter:
    """Count poems by form: "五言绝句", "七言绝句" or "other"."""
    counts = Counter()
    for poem in poems:
        counts[
            "五言绝句"
            if is_quatrain(poem, 5)
            else "七言绝句"
            if is_quatrain(poem, 7)
            else "other"
        ] += 1
    return counts


def tokenizer_to_dict(tokenizer) -> dict:
    """A JSON-ready description of a tokeniser, read back by
    :func:`tokenizer_from_dict`.
    """
    if isinstance(tokenizer, CharTokenizer):
        return {"name": "char", "characters": "".join(tokenizer.characters)}
    if isinstance(tokenizer, BPETokenizer):
        return {"name": "bpe", "merges": [list(m) for m in tokenizer.merges]}
    if isinstance(tokenizer, ByteTokenizer):
        return {"name": "byte"}
    raise TypeError(
        f"tokenizer must be a CharTokenizer, ByteTokenizer or BPETokenizer, got {type(tokenizer).__name__}"
    )


def tokenizer_from_dict(description: dict):
    """The tokeniser that :func:`tokenizer_to_dict` described."""
    name = check_choice("tokenizer", description.get("name"), TOKENIZERS)
    if name == "char":
        return CharTokenizer(description["characters"])
    if name == "bpe":
        return BPETokenizer(description["merges"])
    return ByteTokenizer()

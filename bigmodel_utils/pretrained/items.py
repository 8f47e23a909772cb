"""The items of chapter 8's evaluation suite, each a ``{"prompt", "options", "answer"}`` dict scored by
:func:`.evaluate.score_choices`: questions written for the book (``data/book_questions.jsonl``), two-digit
additions generated from a seed, and cloze lines cut from held-out text. Used in chapter 8.
"""

from __future__ import annotations

import json
import string

import numpy as np

from bigmodel_utils.data.files import book_file
from bigmodel_utils.validation import positive_int

QUESTIONS_SHA256 = "ec0abfb96cc9125aa0851548f55bb75bc52a4be9a15373435c0419fcd3cdcf84"


def book_questions(limit: int | None = None) -> list[dict]:
    """The book's multiple-choice questions (the first ``limit``), as ``Question: ...`` / ``Answer:``
    prompts with each option after a space; every item keeps its ``id`` and ``topic``."""
    path = book_file("book_questions.jsonl", QUESTIONS_SHA256)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = rows[: positive_int("limit", limit)] if limit is not None else rows
    return [{"id": r["id"], "topic": r["topic"], "prompt": f"Question: {r['question']}\nAnswer:",
             "options": [f" {option}" for option in r["options"]], "answer": r["answer"]} for r in rows]


def arithmetic_items(count: int, seed: int = 0) -> list[dict]:
    """``count`` additions of two two-digit numbers; the options are the sum and three near misses (one
    off, ten off either way), in a random order."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(positive_int("count", count)):
        a, b = (int(x) for x in rng.integers(10, 90, size=2))
        options = [a + b, a + b + 1, a + b - 10, a + b + 10]
        order = rng.permutation(4)
        items.append({"prompt": f"Question: What is {a} + {b}?\nAnswer:",
                      "options": [f" {options[i]}" for i in order], "answer": int(np.flatnonzero(order == 0)[0])})
    return items


def cloze_items(text: str, count: int, seed: int = 0, min_words: int = 6) -> list[dict]:
    """``count`` lines of ``text`` (at least ``min_words`` words) that end in a plain word, with that word
    removed (the punctuation after it too, so that it gives nothing away); the options are that word and the
    last words of three other such lines, in a random order."""
    rng = np.random.default_rng(seed)
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= min_words]
    words = [line.split()[-1].rstrip(string.punctuation) for line in lines]
    lines, words = zip(*[(line, word) for line, word in zip(lines, words) if word.isalpha()])
    items = []
    for index in rng.permutation(len(lines))[: positive_int("count", count)]:
        others = [w for w in dict.fromkeys(rng.permutation(words).tolist()) if w != words[index]][:3]
        options = [words[index], *others]
        order = rng.permutation(4)
        prompt = lines[index][: lines[index].rindex(words[index])].rstrip()
        items.append({"prompt": prompt, "options": [f" {options[i]}" for i in order],
                      "answer": int(np.flatnonzero(order == 0)[0])})
    return items

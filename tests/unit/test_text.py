"""Corpora, tokenisers, baselines and windows of bigmodel_utils.data.text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bigmodel_utils.data import text

JING_YE_SI = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"  # Li Bai, a 五言绝句


def test_shakespeare_is_split_as_nanogpt_splits_it():
    corpus = text.load_corpus("shakespeare")
    assert (
        len(corpus.train) == 1_003_854 and len(corpus.validation) == 111_540
    )  # int(0.9 * 1,115,394)
    assert corpus.train.startswith("First Citizen:")
    assert "SHA-256 verified" in corpus.source


def test_tang_corpus_holds_only_quatrains_in_simplified_characters():
    corpus = text.load_corpus("tang")
    poems = (corpus.train + corpus.validation).splitlines()
    counts = text.form_counts(poems)
    assert (
        counts["other"] == 0
        and counts["五言绝句"] > 3000
        and counts["七言绝句"] > 10000
    )
    assert (
        "明月" in corpus.train and "時" not in corpus.train
    )  # 時 (traditional) became 时
    assert len(corpus.validation.splitlines()) == pytest.approx(0.1 * len(poems), abs=1)


def test_unknown_corpus_and_tokenizer_names_are_refused():
    with pytest.raises(
        ValueError, match=r"name must be one of 'shakespeare', 'tang'; got 'poems'"
    ):
        text.load_corpus("poems")
    with pytest.raises(
        ValueError, match=r"tokenizer must be one of 'char', 'byte', 'bpe'; got 'word'"
    ):
        text.make_tokenizer("word", "abc")


def test_char_tokenizer_round_trips_and_names_unknown_characters():
    tokenizer = text.make_tokenizer("char", "hello world")
    assert tokenizer.vocab_size == 8
    ids = tokenizer.encode("hello")
    assert ids.dtype == np.int32 and tokenizer.decode(ids) == "hello"
    with pytest.raises(
        ValueError,
        match=r"2 character\(s\) outside the vocabulary of 8: 'H' \(U\+0048\), 'é'",
    ):
        tokenizer.encode("Hé")


def test_byte_tokenizer_spends_three_bytes_on_a_chinese_character():
    tokenizer = text.ByteTokenizer()
    assert len(tokenizer.encode("月")) == 3 and len(tokenizer.encode("moon")) == 4
    assert tokenizer.decode(tokenizer.encode(JING_YE_SI)) == JING_YE_SI


def test_merge_skips_overlapping_pairs():
    merged = text.merge_pair(np.array([1, 1, 1, 2, 1, 1, 1, 1]), (1, 1), 9)
    assert merged.tolist() == [9, 1, 2, 9, 9]


def test_bpe_reproduces_the_textbook_example():
    # Wikipedia's byte-pair-encoding example: aaabdaaabac -> ZabdZabac -> ZYdZYac -> XdXac
    tokenizer = text.BPETokenizer.train("aaabdaaabac", vocab_size=259)
    a, b = ord("a"), ord("b")
    assert tokenizer.merges == [(a, a), (a, b), (256, 257)]
    assert tokenizer.encode("aaabdaaabac").tolist() == [258, ord("d"), 258, a, ord("c")]
    assert tokenizer.decode([258]) == "aaab"


def test_bpe_is_deterministic_compresses_and_round_trips_unseen_text():
    sample = text.load_corpus("shakespeare").train[:20_000]
    first = text.BPETokenizer.train(sample, vocab_size=300)
    second = text.BPETokenizer.train(sample, vocab_size=300)
    assert first.merges == second.merges and first.vocab_size == 300
    assert (
        text.tokens_per_character(first, sample) < 0.8
    )  # 44 merges already save a fifth
    unseen = "Zwölf Boxkämpfer jagen Viktor quer über den Sylter Deich. 月"
    assert first.decode(first.encode(unseen)) == unseen
    with pytest.raises(
        ValueError, match="vocab_size must be an integer of at least 256"
    ):
        text.BPETokenizer.train(sample, vocab_size=100)


def test_ngram_baselines_rank_as_they_must():
    pattern = np.tile([0, 1, 2], 400)
    baselines = text.ngram_baselines(
        pattern, pattern[:300], vocab_size=4, prior_strength=0.01
    )
    assert baselines["uniform"] == pytest.approx(math.log(4))
    assert baselines["unigram"] == pytest.approx(
        math.log(3), abs=0.01
    )  # three tokens, equally often
    assert baselines["bigram"] < 0.01  # each token fixes the next one
    tang = text.load_corpus("tang")
    tokenizer = text.CharTokenizer.train(tang.train + tang.validation)
    real = text.ngram_baselines(
        tokenizer.encode(tang.train),
        tokenizer.encode(tang.validation),
        tokenizer.vocab_size,
    )
    assert (
        real["uniform"] > real["unigram"] > real["bigram"] > 5
    )  # 5,196 characters: no easy guess


def test_windows_shift_targets_by_one_and_repeat_by_seed():
    ids = np.arange(100)
    x, y = text.windows(ids, context=8, count=5, seed=3)
    assert x.shape == y.shape == (5, 8)
    assert np.array_equal(y[:, :-1], x[:, 1:]) and np.array_equal(
        y[:, -1], x[:, -1] + 1
    )
    assert np.array_equal(text.windows(ids, 8, 5, seed=3)[0], x)
    with pytest.raises(ValueError, match="context must be shorter than the text"):
        text.windows(ids, context=100, count=1)
    poems = np.array([9, 1, 2, 3, 9, 4, 5, 6, 9, 7, 8, 0, 9, 1, 2])
    aligned, _ = text.windows(poems, context=3, count=20, seed=0, start=9)
    assert set(aligned[:, 0].tolist()) == {9} and set(aligned[:, 1].tolist()) == {1, 4, 7}


def test_quatrain_forms():
    assert text.is_quatrain(JING_YE_SI, 5) and not text.is_quatrain(JING_YE_SI, 7)
    seven = "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。"
    assert text.is_quatrain(seven, 7)
    assert not text.is_quatrain(
        "床前明月光，疑是地上霜。举头望明月，", 5
    )  # three lines
    assert not text.is_quatrain("床前明月光疑是地上霜，举头望明月，低头思故乡。", 5)
    assert text.form_counts([JING_YE_SI, seven, "床前"]) == {
        "五言绝句": 1,
        "七言绝句": 1,
        "other": 1,
    }
    with pytest.raises(ValueError, match="line_length must be 5 or 7"):
        text.is_quatrain(JING_YE_SI, 6)

"""The offline SmolLM2 weights read from their GGUF file, and the NumPy decoder that runs them
(bigmodel_utils.pretrained.weights and .from_scratch): no Keras involved."""

from __future__ import annotations

import numpy as np
import pytest

from bigmodel_utils.data.text import load_corpus
from bigmodel_utils.pretrained import chat, from_scratch, items, weights
from bigmodel_utils.scratch import log_softmax

PROMPT_IDS = [504, 3575, 282, 4649, 314]  # "The capital of France is" in SmolLM2's tokenizer


@pytest.fixture(scope="module")
def smollm2():
    return weights.read_gguf()


def llama_cpp_permute(weight, num_heads):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute, as written there."""
    return (weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def test_the_file_is_verified_and_read_with_its_published_shape(smollm2):
    config = smollm2.config
    assert (config.num_layers, config.hidden_dim, config.num_query_heads, config.num_key_value_heads) == (30, 576, 9, 3)
    assert (config.intermediate_dim, config.vocabulary_size, config.layer_norm_epsilon) == (1536, 49152, 1e-5)
    assert config.tie_word_embeddings and config.rope_max_wavelength == 100_000
    assert sum(a.size for a in smollm2.tensors.values()) == 134_515_008
    assert all(a.dtype == np.float32 for a in smollm2.tensors.values())
    assert smollm2.formats["token_embd.weight"] == "Q8_0" and smollm2.formats["blk.0.attn_q.weight"] == "Q4_1"
    assert smollm2.tokens[smollm2.special_ids["eos"]] == "<|im_end|>" and len(smollm2.merges) > 40_000


def test_a_corrupted_or_missing_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(weights.WeightsError, match="model.gguf has SHA-256 .* expected .* reinstall") as error:
        weights.verify(bad)
    assert "\n" not in str(error.value)
    with pytest.raises(weights.WeightsError, match="does not exist: run make install"):
        weights.verify(tmp_path / "absent.gguf")


def test_a_missing_package_names_the_file_and_the_command(monkeypatch):
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(weights.WeightsError, match=r"SmolLM2-135M-Instruct.Q4_1.gguf not found .* run make install"):
        weights.gguf_path()


@pytest.mark.parametrize("num_heads", [1, 3, 9])
def test_unpermute_undoes_llama_cpp_order(num_heads):
    weight = np.random.default_rng(0).normal(size=(num_heads * 64, 32))
    permuted = llama_cpp_permute(weight, num_heads)
    assert not np.array_equal(permuted, weight)
    np.testing.assert_array_equal(weights.unpermute(permuted, num_heads), weight)


def test_rms_norm_scales_to_unit_root_mean_square():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(4, 16))
    y = from_scratch.rms_norm(x, np.ones(16), 0.0)
    np.testing.assert_allclose(np.sqrt(np.mean(y**2, axis=-1)), 1.0, rtol=1e-12)
    assert abs(y.mean()) > 0.5  # unlike LayerNorm, the mean is not removed


def test_rotary_scores_depend_only_on_the_distance():
    rng = np.random.default_rng(2)
    q, k = rng.normal(size=64), rng.normal(size=64)
    cos, sin = from_scratch.rotary_tables(40, 64, 10_000.0)
    rotated = lambda v, p: from_scratch.apply_rotary(v, cos[p], sin[p])  # noqa: E731
    np.testing.assert_allclose(rotated(q, 3) @ rotated(k, 1), rotated(q, 30) @ rotated(k, 28), rtol=1e-5)
    assert abs(rotated(q, 3) @ rotated(k, 1) - rotated(q, 3) @ rotated(k, 2)) > 1e-3
    np.testing.assert_allclose(np.linalg.norm(rotated(q, 17)), np.linalg.norm(q), rtol=1e-6)


def test_grouped_query_attention_equals_multi_head_attention_with_shared_heads():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    wq, wo = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    wk, wv = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))  # 2 key/value heads of 2 for 4 query heads
    cos, sin = from_scratch.rotary_tables(5, 2, 10_000.0)
    grouped = from_scratch.grouped_query_attention(x, wq, wk, wv, wo, 4, 2, cos, sin)
    repeat = lambda w: np.repeat(w.reshape(2, 2, 8), 2, axis=0).reshape(8, 8)  # noqa: E731
    full = from_scratch.grouped_query_attention(x, wq, repeat(wk), repeat(wv), wo, 4, 4, cos, sin)
    np.testing.assert_allclose(grouped, full, rtol=1e-5)
    changed = x.copy()
    changed[-1] += 1.0  # causal: the last token cannot change the earlier outputs
    later = from_scratch.grouped_query_attention(changed, wq, wk, wv, wo, 4, 2, cos, sin)
    np.testing.assert_allclose(later[:-1], grouped[:-1], rtol=1e-6)


def mean_log_likelihood(model, ids):
    log_probs = log_softmax(from_scratch.forward(model.tensors, model.config, ids).astype(np.float64))
    return log_probs[np.arange(len(ids) - 1), ids[1:]].mean()


def byte_level_bpe(model):
    """SmolLM2's tokenizer rebuilt with Hugging Face's ``tokenizers`` (a KerasHub dependency) from the GGUF's
    tokens and merges: an encoder that involves no Keras."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {token: index for index, token in enumerate(model.tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocabulary, merges=[tuple(m.split(" ")) for m in model.merges]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tokenizer


def test_the_real_weights_know_a_fact_and_a_wrong_layout_is_caught(smollm2):
    assert byte_level_bpe(smollm2).encode("The capital of France is").ids == PROMPT_IDS
    logits = from_scratch.forward(smollm2.tensors, smollm2.config, PROMPT_IDS)
    assert smollm2.tokens[int(np.argmax(logits[-1]))] == "ĠParis"
    # With llama.cpp's row order kept, the short prompt still gets " Paris" (queries and keys are permuted
    # alike, and the rotation hardly turns over five positions), but held-out text becomes far less likely.
    permuted = weights.in_llama_cpp_order(smollm2)
    for name, heads in (("blk.3.attn_q.weight", 9), ("blk.3.attn_k.weight", 3)):  # llama.cpp's own permutation
        np.testing.assert_array_equal(permuted.tensors[name], llama_cpp_permute(smollm2.tensors[name], heads))
    np.testing.assert_array_equal(permuted.tensors["blk.3.attn_v.weight"], smollm2.tensors["blk.3.attn_v.weight"])
    assert permuted.tokens[int(np.argmax(from_scratch.forward(permuted.tensors, permuted.config, PROMPT_IDS)[-1]))] \
        == "ĠParis"
    held_out = byte_level_bpe(smollm2).encode(load_corpus("shakespeare").validation[:1000]).ids[:96]
    right = np.exp(-mean_log_likelihood(smollm2, held_out))
    wrong = np.exp(-mean_log_likelihood(permuted, held_out))
    assert right < 80 and wrong > 4 * right  # measured: about 36 and 410 (perplexity)


def test_chat_template_writes_turns_and_refuses_unknown_roles(smollm2):
    prompt = chat.render_chat(smollm2.chat_template, [{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith(
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match=r"messages\[1\]\['role'\] must be one of system, user, assistant, got 'bot'"):
        chat.render_chat(smollm2.chat_template, [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "x"}])
    with pytest.raises(ValueError, match="messages must be a non-empty list"):
        chat.check_messages([])
    with pytest.raises(ValueError, match=r"messages\[0\]\['content'\] must be a string"):
        chat.check_messages([{"role": "user", "content": 3}])


def test_evaluation_items_have_one_right_answer_each():
    for item in items.arithmetic_items(50, seed=1):
        a, b = (int(n) for n in item["prompt"].split("What is ")[1].rstrip("?\nAnswer:").split(" + "))
        assert int(item["options"][item["answer"]]) == a + b and len(set(item["options"])) == 4
    text = "one two three four five six\nseven eight nine ten eleven twelve.\nalpha beta gamma delta epsilon zeta;\n" \
           "a b c d e fin\nshort line\n"
    for item in items.cloze_items(text, 4, seed=0):
        word = item["options"][item["answer"]].strip()
        assert word.isalpha() and word not in item["prompt"].split()[-1:] and len(set(item["options"])) == 4
    questions = items.book_questions()
    assert len(questions) == 60 and len({q["id"] for q in questions}) == 60
    assert np.bincount([q["answer"] for q in questions]).tolist() == [15, 15, 15, 15]

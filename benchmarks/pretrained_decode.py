"""Decoding speed of chapter 8's real model (SmolLM2-135M-Instruct, offline weights) at batch 1, greedy, in one run:
the book's decoder under Keras's TensorFlow and JAX backends (float32 and Keras int8), KerasHub's own ``generate``
(the cost of compiling per length), plain PyTorch on the same float32 weights, and the memory-bandwidth bound.

    python benchmarks/pretrained_decode.py                    # every implementation installed
    python benchmarks/pretrained_decode.py --new-tokens 200 --json benchmarks/results/pretrained_decode.json
    python benchmarks/pretrained_decode.py --only jax,plain-torch

Each implementation runs in its own process (Keras reads ``KERAS_BACKEND`` once), one after the other, with the
same prompt of ``--prompt-tokens`` tokens of held-out Shakespeare. A row reports the prefill (the prompt in one
pass, tokens per second), the decoding of ``--new-tokens`` greedy tokens (tokens per second, the median of
``--repeats`` runs after a warm-up that compiles), and the share of the bound: decoding at batch 1 reads every
weight once per token, so it cannot beat (read bandwidth) / (weight bytes). The bandwidth is measured here, by
NumPy copies (``decoding.measure_memory_bandwidth``). PyTorch is the CPU wheel of ``benchmarks/requirements.txt``;
llama.cpp (``llama-cpp-python``) ships only as a source package that compiles llama.cpp, and is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMPLEMENTATIONS = {
    "tensorflow": "book decoder, Keras TensorFlow, float32",
    "tensorflow-int8": "book decoder, Keras TensorFlow, int8",
    "jax": "book decoder, Keras JAX, float32",
    "jax-int8": "book decoder, Keras JAX, int8",
    "keras-hub-generate": "KerasHub generate, JAX, float32",
    "plain-torch": "plain PyTorch, float32",
}
PREFIX = "PRETRAINED_DECODE "


def prompt_ids(count: int) -> list[int]:
    from bigmodel_utils.data.text import load_corpus
    from bigmodel_utils.pretrained import weights

    model = weights.read_gguf()
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {token: index for index, token in enumerate(model.tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocabulary, merges=[tuple(m.split(" ")) for m in model.merges]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tokenizer.encode(load_corpus("shakespeare").validation[:4000]).ids[:count]


def keras_worker(name: str, ids: list[int], new_tokens: int, repeats: int, cache: Path) -> dict:
    from bigmodel_utils.pretrained import decode, keras_model

    model = keras_model.load_model("quick", cache).model
    if name.endswith("int8"):
        keras_model.quantize(model, "int8")
    decoder = decode.Decoder(model, max_length=len(ids) + new_tokens + 1)
    prompt = decoder.tokenizer.detokenize(np.array(ids, "int32"))
    prompt = prompt if isinstance(prompt, str) else prompt.numpy().decode()
    decoder.generate(prompt, max_new_tokens=4, stop_at_end=False)  # compile the prefill and the step
    runs = [decoder.generate(prompt, max_new_tokens=new_tokens, stop_at_end=False) for _ in range(repeats)]
    return {"prefill": statistics.median(r.prompt_tokens / r.prefill_seconds for r in runs),
            "decode": statistics.median(r.decode_tokens_per_second for r in runs),
            "weight_bytes": keras_model.weight_bytes(model)}


def generate_worker(ids: list[int], new_tokens: int, cache: Path) -> dict:
    from bigmodel_utils.pretrained import keras_model

    model = keras_model.load_model("quick", cache).model
    prompt = model.preprocessor.tokenizer.detokenize(np.array(ids, "int32"))
    prompt = prompt if isinstance(prompt, str) else prompt.numpy().decode()
    seconds = []
    for extra in (new_tokens, new_tokens + 8):  # a new max_length compiles again
        start = time.perf_counter()
        model.generate(prompt, max_length=len(ids) + extra, stop_token_ids=None)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()  # no stop token: every call runs to max_length, so the count is exact
    model.generate(prompt, max_length=len(ids) + new_tokens + 8, stop_token_ids=None)
    warm = time.perf_counter() - start
    # the warm call's prefill is included (KerasHub does not time it apart), so this understates decoding a little
    return {"first_call_s": seconds[0], "new_length_s": seconds[1], "warm_call_s": warm,
            "decode": (new_tokens + 8) / warm, "weight_bytes": 4 * model.count_params()}


def torch_worker(ids: list[int], new_tokens: int, repeats: int) -> dict:
    import torch

    from bigmodel_utils.pretrained import weights

    torch.set_grad_enabled(False)
    source = weights.read_gguf()
    c = source.config
    t = {name: torch.from_numpy(value) for name, value in source.tensors.items()}
    h, kv = c.head_dim, c.num_key_value_heads
    inv = c.rope_max_wavelength ** (-torch.arange(0, h, 2, dtype=torch.float32) / h)

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.layer_norm_epsilon) * w

    def rope(x, positions):
        angles = positions[:, None].float() * inv[None]
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        first, second = x.chunk(2, -1)
        return x * cos + torch.cat([-second, first], -1) * sin

    def step(tokens, start, cache):
        x = t["token_embd.weight"][tokens]
        positions = torch.arange(start, start + len(tokens))
        for i in range(c.num_layers):
            w = lambda n, i=i: t[f"blk.{i}.{n}.weight"]  # noqa: E731
            a = norm(x, w("attn_norm"))
            q = rope((a @ w("attn_q").T).view(-1, c.num_query_heads, h).transpose(0, 1), positions)
            k = rope((a @ w("attn_k").T).view(-1, kv, h).transpose(0, 1), positions)
            v = (a @ w("attn_v").T).view(-1, kv, h).transpose(0, 1)
            cache[i][0][:, start : start + len(tokens)] = k
            cache[i][1][:, start : start + len(tokens)] = v
            keys, values = cache[i][0][:, : start + len(tokens)], cache[i][1][:, : start + len(tokens)]
            out = torch.nn.functional.scaled_dot_product_attention(
                q, keys, values, is_causal=len(tokens) > 1, enable_gqa=True)
            x = x + out.transpose(0, 1).reshape(len(tokens), -1) @ w("attn_output").T
            m = norm(x, w("ffn_norm"))
            x = x + (torch.nn.functional.silu(m @ w("ffn_gate").T) * (m @ w("ffn_up").T)) @ w("ffn_down").T
        return norm(x[-1:], t["output_norm.weight"]) @ t["token_embd.weight"].T

    def run(count):
        cache = [(torch.zeros(kv, len(ids) + count + 1, h), torch.zeros(kv, len(ids) + count + 1, h))
                 for _ in range(c.num_layers)]
        start = time.perf_counter()
        token = int(step(torch.tensor(ids), 0, cache).argmax())
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for position in range(len(ids), len(ids) + count - 1):
            token = int(step(torch.tensor([token]), position, cache).argmax())
        return len(ids) / prefill, (count - 1) / (time.perf_counter() - start)

    run(4)
    results = [run(new_tokens) for _ in range(repeats)]
    return {"prefill": statistics.median(r[0] for r in results), "decode": statistics.median(r[1] for r in results),
            "weight_bytes": 4 * sum(v.numel() for v in t.values()), "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cache = ROOT / "_build" / "benchmark-artifacts" / "smollm2_preset"
    if args.worker:
        ids = prompt_ids(args.prompt_tokens)
        if args.worker == "plain-torch":
            row = torch_worker(ids, args.new_tokens, args.repeats)
        elif args.worker == "keras-hub-generate":
            row = generate_worker(ids, args.new_tokens, cache)
        else:
            row = keras_worker(args.worker, ids, args.new_tokens, args.repeats, cache)
        print(PREFIX + json.dumps(row), flush=True)
        return 0
    from bigmodel_utils.techniques import decoding

    bandwidth = decoding.measure_memory_bandwidth()
    rows = {}
    for name in args.only.split(","):
        if name not in IMPLEMENTATIONS:
            parser.error(f"--only must name some of {', '.join(IMPLEMENTATIONS)}, got {name!r}")
        backend = "jax" if name in ("jax", "jax-int8", "keras-hub-generate") else "tensorflow"
        environment = {**os.environ, "KERAS_BACKEND": backend}
        command = [sys.executable, __file__, "--worker", name, "--prompt-tokens", str(args.prompt_tokens),
                   "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
        done = subprocess.run(command, env=environment, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith(PREFIX)]
        if done.returncode or not lines:
            reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode
            print(f"{name}: failed ({reason})")
            continue
        row = json.loads(lines[-1][len(PREFIX):])
        row["bound"] = bandwidth / row["weight_bytes"]
        row["share_of_bound"] = row["decode"] / row["bound"]
        rows[name] = row
    print(f"memory read bandwidth {bandwidth / 1e9:.1f} GB/s; prompt {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, batch 1, greedy")
    print(f"{'implementation':42} {'prefill tok/s':>13} {'decode tok/s':>12} {'bound tok/s':>11} {'share':>6}")
    for name, row in rows.items():
        prefill = f"{row['prefill']:13.1f}" if "prefill" in row else f"{'-':>13}"
        print(f"{IMPLEMENTATIONS[name]:42} {prefill} {row['decode']:12.1f} {row['bound']:11.1f} "
              f"{row['share_of_bound']:6.0%}")
    if "keras-hub-generate" in rows:
        g = rows["keras-hub-generate"]
        print(f"KerasHub generate: first call {g['first_call_s']:.1f} s, a new max_length {g['new_length_s']:.1f} s, "
              f"the same length again {g['warm_call_s']:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bandwidth": bandwidth, "rows": rows, "arguments": vars(args)}, indent=2,
                                        default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Language-model training throughput: one GPT under each Keras backend and in plain PyTorch, side by side.

    python benchmarks/lm_throughput.py                        # every backend installed, nanoGPT's CPU model
    python benchmarks/lm_throughput.py --repeats 7 --json benchmarks/results/lm_throughput.json
    python benchmarks/lm_throughput.py --only jax,plain-torch --jit auto

The model is chapter 6's GPT (``bigmodel_utils.gpt``) in nanoGPT's CPU configuration on Tiny Shakespeare at
character level: 4 layers, 4 heads, width 128, a context of 64 characters, batch 32. It trains with
``model.fit`` under the TensorFlow, JAX and PyTorch backends of Keras 3, and, for comparison, as a plain
PyTorch module written below with the same architecture, parameter count, optimiser and batches (eagerly and,
where it compiles in time, with ``torch.compile``).

Each implementation runs in its own worker process (Keras reads ``KERAS_BACKEND`` once, at import). All workers
warm up (tracing, XLA or Inductor compilation) first; then the parent asks them in turn for one timed repeat of
``--steps`` steps, round after round, so that a change in the load of a shared machine hits every
implementation alike. It prints tokens per second (the median repeat), milliseconds per step, the achieved
FLOP/s (tokens/s times ``gpt.flops_per_token(config)["training"]``), the model FLOPs utilisation (MFU) against
this machine's measured NumPy float32 matmul rate, and the ratio to plain PyTorch; ``--json`` saves it all.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import queue
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import threadpoolctl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

KERAS_BACKENDS = ("tensorflow", "jax", "torch")
PLAIN_TORCH, PLAIN_TORCH_COMPILED = "plain-torch", "plain-torch-compile"
IMPLEMENTATIONS = {
    "tensorflow": "Keras 3, TensorFlow backend",
    "jax": "Keras 3, JAX backend",
    "torch": "Keras 3, PyTorch backend",
    PLAIN_TORCH: "plain PyTorch",
    PLAIN_TORCH_COMPILED: "plain PyTorch, torch.compile",
}
"""Worker name -> the row label of the table, in the order the table lists them."""

REQUIRED_PACKAGE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", PLAIN_TORCH: "torch",
                    PLAIN_TORCH_COMPILED: "torch"}
MESSAGE_PREFIX = "LM_THROUGHPUT "
"""Workers prefix their JSON lines with this, so that anything a framework prints to stdout is ignored."""
WARMUP_SEED = 10_000  # the warm-up batches differ from the timed ones, which use the repeat number as seed


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def jit_option(text: str):
    """``--jit`` as ``compile_language_model`` takes it: True, False or "auto"."""
    choices = {"true": True, "false": False, "auto": "auto"}
    if text.lower() not in choices:
        raise argparse.ArgumentTypeError(f"must be true, false or auto, got {text!r}")
    return choices[text.lower()]


def implementation_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in IMPLEMENTATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of {', '.join(IMPLEMENTATIONS)}; "
                                         f"got {text!r}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=positive_int, default=4)
    parser.add_argument("--heads", type=positive_int, default=4)
    parser.add_argument("--width", type=positive_int, default=128)
    parser.add_argument("--context", type=positive_int, default=64, help="tokens (characters) per window")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="windows per training step")
    parser.add_argument("--steps", type=positive_int, default=10, help="training steps per timed repeat")
    parser.add_argument("--warmup-steps", type=positive_int, default=5,
                        help="steps of the untimed first fit call (it traces and compiles)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per implementation (median "
                        "reported); the repeats of all implementations alternate")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--jit", type=jit_option, default=True,
                        help="jit_compile for the Keras backends: true (default), false or auto")
    parser.add_argument("--single-thread", action="store_true",
                        help="run every framework, and the NumPy matmul of the MFU reference, on one thread "
                        "(default: each framework's own default, which uses every core)")
    parser.add_argument("--only", type=implementation_list, default=list(IMPLEMENTATIONS),
                        help=f"comma-separated subset of {', '.join(IMPLEMENTATIONS)} (default: all)")
    parser.add_argument("--warmup-timeout", type=positive_int, default=300,
                        help="seconds a worker may take to start and warm up (compile) before it is dropped")
    parser.add_argument("--json", type=Path, default=None, help="write the table and the settings to this file")
    parser.add_argument("--worker", choices=tuple(IMPLEMENTATIONS), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.width % args.heads:
        parser.error(f"--width ({args.width}) must be divisible by --heads ({args.heads})")
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    return args


def model_arguments(args: argparse.Namespace) -> list[str]:
    """The options a worker needs to build the same model and batches as every other worker."""
    jit = {True: "true", False: "false"}.get(args.jit, "auto")
    return ["--layers", str(args.layers), "--heads", str(args.heads), "--width", str(args.width),
            "--context", str(args.context), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
            "--warmup-steps", str(args.warmup_steps), "--repeats", str(args.repeats),
            "--learning-rate", repr(args.learning_rate), "--jit", jit] + (
                ["--single-thread"] if args.single_thread else [])


# --------------------------------------------------------------------------------------------------
# The worker side: one implementation, warmed up, then timed one repeat at a time
# --------------------------------------------------------------------------------------------------


SINGLE_THREAD_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",  # PyTorch, NumPy
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",  # XLA:CPU, for JAX
}
"""Set in a worker before any framework loads, for ``--single-thread``."""


def limit_threads(backend: str) -> int:
    """Put the framework just imported on one thread (``--single-thread``); return its intra-op thread count."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return tf.config.threading.get_intra_op_parallelism_threads()
    if backend == "torch":
        import torch

        torch.set_num_threads(1)
        return torch.get_num_threads()
    return 1  # JAX: XLA_FLAGS in SINGLE_THREAD_ENVIRONMENT, read when its CPU client starts


def intra_op_threads(backend: str) -> int:
    """The framework's intra-op thread count; 0 means TensorFlow's default, one per core."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads()
    if backend == "torch":
        import torch

        return torch.get_num_threads()
    return 1 if "intra_op_parallelism_threads=1" in os.environ.get("XLA_FLAGS", "") else os.cpu_count()


def send_to_parent(message: dict) -> None:
    print(MESSAGE_PREFIX + json.dumps(message), flush=True)


def load_token_ids():
    """Tiny Shakespeare, character-encoded as chapter 6 does it: ``(ids, vocab_size)``."""
    from bigmodel_utils.data import text

    corpus = text.load_corpus("shakespeare")
    tokenizer = text.CharTokenizer.train(corpus.train + corpus.validation)
    return tokenizer.encode(corpus.train), tokenizer.vocab_size


def schedule_steps(args: argparse.Namespace) -> tuple[int, int]:
    """Optimiser steps the whole run takes, and the learning-rate warm-up (a tenth), for both optimisers."""
    total_steps = args.warmup_steps + args.repeats * args.steps
    return total_steps, total_steps // 10


class KerasTrainer:
    """``gpt.build_gpt`` compiled by ``gpt.compile_language_model`` and trained with ``model.fit``."""

    def __init__(self, config, args: argparse.Namespace):
        import keras

        from bigmodel_utils import gpt

        backend = keras.backend.backend()
        threads = limit_threads(backend) if args.single_thread else intra_op_threads(backend)
        self.batch_size = args.batch_size
        self.model = gpt.build_gpt(config, seed=0)
        total_steps, warmup = schedule_steps(args)
        gpt.compile_language_model(self.model, gpt.make_optimizer(args.learning_rate, total_steps, warmup),
                                   jit_compile=args.jit)
        # compile() resolves "auto"; the label says what that means for this backend.
        self.jit_compile = bool(self.model.jit_compile)
        labels = {"tensorflow": ("XLA", "tf.function graph"), "jax": ("XLA (jax.jit)", "none (eager)"),
                  "torch": ("torch.compile", "none (eager)")}
        self.compiled_with = labels[backend][0 if self.jit_compile else 1]
        self.parameters = int(self.model.count_params())
        self.versions = {"keras": keras.__version__, backend: _framework_version(backend), "threads": threads}

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """One ``fit`` call over all the windows, ``len(inputs) / batch_size`` steps; returns the last loss."""
        # shuffle=False as in gpt.train_language_model: the windows are random already.
        history = self.model.fit(inputs, targets, batch_size=self.batch_size, epochs=1, shuffle=False, verbose=0)
        return float(history.history["loss"][-1])


def _framework_version(name: str) -> str:
    module = __import__(name)
    return getattr(module, "__version__", "unknown")


def build_torch_gpt(config):
    """The GPT of ``bigmodel_utils.gpt.GPT``, written in plain PyTorch; returns an ``nn.Module``.

    Same layout, layer for layer: token and position embeddings, pre-LayerNorm blocks whose attention makes
    Q, K and V with one fused Linear, causal softmax attention scaled by 1/sqrt(head size), an output Linear,
    a GELU MLP four times wide, a final LayerNorm and an output layer tied to the token embedding, plus a bias.
    Initialised as Keras initialises its layers (Glorot-uniform kernels, zero biases, N(0, 0.02) embeddings).
    """
    import torch
    from torch import nn
    from torch.nn import functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            width = config.width
            self.norm_1 = nn.LayerNorm(width, eps=1e-5)
            self.qkv = nn.Linear(width, 3 * width)
            self.out = nn.Linear(width, width)
            self.norm_2 = nn.LayerNorm(width, eps=1e-5)
            self.mlp_in = nn.Linear(width, 4 * width)
            self.mlp_out = nn.Linear(4 * width, width)
            self.register_buffer("causal", torch.tril(torch.ones(config.context, config.context, dtype=torch.bool)),
                                 persistent=False)

        def attention(self, x):  # (B, T, d) -> (B, T, d)
            batch, length, width = x.shape
            # The fused projection's 3d outputs are [q | k | v], each split into heads,
            # as CausalSelfAttention.split_heads does.
            qkv = self.qkv(x).view(batch, length, 3, config.num_heads, config.head_size)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # three of (B, H, T, d_head)
            scores = q @ k.transpose(-2, -1) / math.sqrt(config.head_size)
            scores = scores.masked_fill(~self.causal[:length, :length], -1e9)  # -1e9, the Keras model's mask value
            heads = torch.softmax(scores, dim=-1) @ v  # (B, H, T, d_head)
            return self.out(heads.transpose(1, 2).reshape(batch, length, width))

        def forward(self, x):
            x = x + self.attention(self.norm_1(x))
            return x + self.mlp_out(functional.gelu(self.mlp_in(self.norm_2(x))))  # exact GELU, as Keras's

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = nn.Embedding(config.vocab_size, config.width)
            self.position_embedding = nn.Embedding(config.context, config.width)
            self.blocks = nn.ModuleList(Block() for _ in range(config.num_layers))
            self.final_norm = nn.LayerNorm(config.width, eps=1e-5)
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Embedding):
                    nn.init.normal_(module.weight, 0.0, 0.02)

        def forward(self, tokens):  # (B, T) ids -> (B, T, V) logits
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            x = self.token_embedding(tokens) + self.position_embedding(positions)[None]
            for block in self.blocks:
                x = block(x)
            return self.final_norm(x) @ self.token_embedding.weight.T + self.output_bias

    torch.manual_seed(0)
    return TorchGPT()


class TorchTrainer:
    """:func:`build_torch_gpt` trained by a hand-written loop: AdamW, the Keras schedule, clipping at norm 1."""

    def __init__(self, config, args: argparse.Namespace, compiled: bool):
        import torch

        from bigmodel_utils import gpt

        threads = limit_threads("torch") if args.single_thread else intra_op_threads("torch")
        self.torch, self.batch_size = torch, args.batch_size
        self.model = build_torch_gpt(config)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        expected = gpt.parameter_count(config)["total"]
        assert self.parameters == expected, f"plain PyTorch GPT has {self.parameters} parameters, Keras's {expected}"
        # Decay the matrices (kernels and both embeddings), not biases or LayerNorm parameters: what the Keras
        # optimiser does in practice (its exclusion of "position_embedding" does not match the variable's name).
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        # eps=1e-7 is Keras's AdamW default (PyTorch's is 1e-8); betas and decay as gpt.make_optimizer.
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=args.learning_rate, betas=(0.9, 0.99), eps=1e-7)
        total_steps, warmup = schedule_steps(args)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: learning_rate_factor(
            step, total_steps, warmup))
        self.forward = torch.compile(self.model) if compiled else self.model
        self.compiled_with = "torch.compile" if compiled else "none (eager)"
        self.jit_compile = compiled
        self.versions = {"torch": torch.__version__, "threads": threads}

    def train(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """``len(inputs) / batch_size`` optimiser steps over the windows, in order; returns the last loss."""
        torch = self.torch
        inputs, targets = torch.from_numpy(inputs).long(), torch.from_numpy(targets).long()
        self.model.train()
        for start in range(0, len(inputs), self.batch_size):
            x, y = inputs[start:start + self.batch_size], targets[start:start + self.batch_size]
            logits = self.forward(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
        return float(loss.item())


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int, final_fraction: float = 0.1) -> float:
    """The multiplier of the peak learning rate at ``step`` in ``gpt.make_optimizer``'s schedule: linear warm-up
    from 1/warmup_steps of the peak, then cosine decay to ``final_fraction`` of it."""
    if warmup_steps and step < warmup_steps:
        start = 1.0 / warmup_steps
        return start + (1.0 - start) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def run_worker(name: str, args: argparse.Namespace) -> int:
    """Build and warm up implementation ``name``, then time one repeat per line ``<repeat number>`` on stdin."""
    try:
        # KERAS_BACKEND must be set before keras is first imported; the plain-PyTorch workers import
        # bigmodel_utils.gpt (parameter and FLOP counts) under the torch backend so as not to load TensorFlow.
        os.environ["KERAS_BACKEND"] = name if name in KERAS_BACKENDS else "torch"
        if args.single_thread:
            xla_flags = " ".join(filter(None, (os.environ.get("XLA_FLAGS"), SINGLE_THREAD_ENVIRONMENT["XLA_FLAGS"])))
            os.environ.update({**SINGLE_THREAD_ENVIRONMENT, "XLA_FLAGS": xla_flags})  # keep the user's XLA flags
        from bigmodel_utils import gpt
        from bigmodel_utils.data import text

        ids, vocab_size = load_token_ids()
        config = gpt.GPTConfig(vocab_size=vocab_size, context=args.context, num_layers=args.layers,
                               num_heads=args.heads, width=args.width, dropout=0.0)
        if name in KERAS_BACKENDS:
            trainer = KerasTrainer(config, args)
        else:
            trainer = TorchTrainer(config, args, compiled=name == PLAIN_TORCH_COMPILED)
        inputs, targets = text.windows(ids, args.context, args.warmup_steps * args.batch_size, seed=WARMUP_SEED)
        start = time.perf_counter()
        trainer.train(inputs, targets)
        send_to_parent({"ready": True, "parameters": trainer.parameters, "compiled_with": trainer.compiled_with,
                        "jit_compile": trainer.jit_compile, "warmup_seconds": time.perf_counter() - start,
                        "versions": trainer.versions, "expected_parameters": gpt.parameter_count(config)["total"],
                        "training_flops_per_token": gpt.flops_per_token(config)["training"]})
        for line in sys.stdin:
            repeat = int(line)
            inputs, targets = text.windows(ids, args.context, args.steps * args.batch_size, seed=repeat)
            start = time.perf_counter()
            loss = trainer.train(inputs, targets)
            send_to_parent({"repeat": repeat, "seconds": time.perf_counter() - start, "loss": loss})
    except Exception as error:  # reported as the row's status; the traceback goes to the worker's log
        import traceback

        traceback.print_exc()
        send_to_parent({"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"})
        return 1
    return 0


# --------------------------------------------------------------------------------------------------
# The parent side: start the workers, alternate their repeats, make the table
# --------------------------------------------------------------------------------------------------


class Worker:
    """One implementation's worker process, with its JSON messages read into a queue by a thread."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")  # the worker's stderr, shown when it fails
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", name,
                                         *model_arguments(args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, env=env, cwd=ROOT)
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_messages, daemon=True).start()

    def _read_messages(self):
        for line in self.process.stdout:
            if line.startswith(MESSAGE_PREFIX):
                self.messages.put(json.loads(line[len(MESSAGE_PREFIX):]))
        self.messages.put({"error": f"the worker exited (code {self.process.wait()})"})

    def receive(self, timeout: float) -> dict:
        """The worker's next message; ``{"error": ...}`` when it failed, exited or said nothing in time."""
        try:
            return self.messages.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return {"error": f"no answer within {timeout:.0f} s", "timed_out": True}

    def request_repeat(self, repeat: int, timeout: float) -> dict:
        """Ask for timed repeat number ``repeat`` and wait for its result (``{"seconds": ..., "loss": ...}``)."""
        try:
            self.process.stdin.write(f"{repeat}\n")
            self.process.stdin.flush()
        except OSError:  # the worker has died; its last message says why
            return self.receive(timeout=1.0)
        return self.receive(timeout)

    def log_tail(self, lines: int = 15) -> str:
        self.log.seek(0)
        return "".join(self.log.readlines()[-lines:])

    def close(self):
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.log.close()


def missing_package(name: str) -> str | None:
    package = REQUIRED_PACKAGE[name]
    return None if importlib.util.find_spec(package) else package


def machine_description() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__}


def measure(args: argparse.Namespace) -> dict:
    """Start the workers, warm them all up, time ``args.repeats`` rounds of repeats; return the report."""
    rows = {name: {"implementation": name, "label": IMPLEMENTATIONS[name], "status": "ok"} for name in args.only}
    with threadpoolctl.threadpool_limits(1 if args.single_thread else None):
        from bigmodel_utils.backend import speed  # NumPy only: this process loads no framework

        matmul_rate = speed.matmul_flops_per_second(library="numpy")
    load_before = os.getloadavg()
    workers = {}
    for name in args.only:
        missing = missing_package(name)
        if missing:
            rows[name]["status"] = f"skipped: {missing} is not installed"
        else:
            workers[name] = Worker(name, args)  # all start at once: warm-up is not timed
    deadline = time.monotonic() + args.warmup_timeout
    for name, worker in list(workers.items()):
        message = worker.receive(deadline - time.monotonic())
        if "error" in message:
            if message.get("timed_out"):
                rows[name]["status"] = f"skipped: not warmed up (compiled) within {args.warmup_timeout} s"
            else:
                rows[name]["status"] = f"failed: {message['error']}"
                print(f"--- {name} failed; the end of its log:\n{worker.log_tail()}", file=sys.stderr)
            worker.process.kill()
            worker.close()
            del workers[name]
            continue
        rows[name].update({key: message[key] for key in ("parameters", "expected_parameters", "compiled_with",
                                                          "jit_compile", "warmup_seconds", "versions")})
        rows[name]["training_flops_per_token"] = message["training_flops_per_token"]
        rows[name]["repeat_seconds"] = []
    for repeat in range(args.repeats):
        order = list(workers)
        order = order[repeat % len(order):] + order[:repeat % len(order)] if order else order
        for name in order:  # who goes first rotates, so no implementation always follows the same one
            message = workers[name].request_repeat(repeat, timeout=args.warmup_timeout)
            if "error" in message:
                rows[name]["status"] = f"failed in repeat {repeat}: {message['error']}"
                print(f"--- {name} failed; the end of its log:\n{workers[name].log_tail()}", file=sys.stderr)
                workers.pop(name).close()
                continue
            rows[name]["repeat_seconds"].append(message["seconds"])
            rows[name]["final_loss"] = message["loss"]
    for worker in workers.values():
        worker.close()
    tokens_per_step = args.batch_size * args.context
    for row in rows.values():
        seconds = row.get("repeat_seconds")
        if row["status"] != "ok" or not seconds:
            continue
        rates = [args.steps * tokens_per_step / s for s in seconds]
        row["tokens_per_second"] = statistics.median(rates)
        row["tokens_per_second_range"] = [min(rates), max(rates)]
        row["ms_per_step"] = 1000 * tokens_per_step / row["tokens_per_second"]
        row["achieved_flops_per_second"] = row["tokens_per_second"] * row["training_flops_per_token"]
        row["mfu"] = row["achieved_flops_per_second"] / matmul_rate
    reference = rows.get(PLAIN_TORCH, {}).get("tokens_per_second")
    for row in rows.values():
        if reference and "tokens_per_second" in row:
            row["ratio_to_plain_torch"] = row["tokens_per_second"] / reference
    return {
        "rows": list(rows.values()),
        "settings": {"layers": args.layers, "heads": args.heads, "width": args.width, "context": args.context,
                     "batch_size": args.batch_size, "steps": args.steps, "warmup_steps": args.warmup_steps,
                     "repeats": args.repeats, "learning_rate": args.learning_rate, "jit": args.jit,
                     "single_thread": args.single_thread,
                     "tokens_per_step": tokens_per_step},
        "mfu_reference": {"what": f"NumPy float32 matmul, 1024 x 1024, median of 5, in the parent process, "
                                  f"{'one thread' if args.single_thread else 'default threads'}",
                          "flops_per_second": matmul_rate},
        "machine": machine_description(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(part) for part in sys.argv),
    }


def format_table(report: dict) -> str:
    """The report's rows as a Markdown table (skipped and failed implementations say why)."""
    lines = ["| implementation | compiled with | tokens/s (median) | tokens/s (range) | ms/step | GFLOP/s | MFU "
             "| vs plain PyTorch |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["rows"]:
        if "tokens_per_second" not in row:
            lines.append(f"| {row['label']} | {row.get('compiled_with', '')} | {row['status']} | | | | | |")
            continue
        low, high = row["tokens_per_second_range"]
        ratio = f"{row['ratio_to_plain_torch']:.2f}x" if "ratio_to_plain_torch" in row else "n/a"
        lines.append(f"| {row['label']} | {row['compiled_with']} | {row['tokens_per_second']:,.0f} "
                     f"| {low:,.0f}-{high:,.0f} | {row['ms_per_step']:.1f} "
                     f"| {row['achieved_flops_per_second'] / 1e9:.2f} | {100 * row['mfu']:.1f}% | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker, args)
    start = time.perf_counter()
    report = measure(args)
    report["seconds"] = time.perf_counter() - start
    settings, reference = report["settings"], report["mfu_reference"]
    print(f"GPT {settings['layers']} layers x width {settings['width']} ({settings['heads']} heads), context "
          f"{settings['context']}, batch {settings['batch_size']}: median of {settings['repeats']} repeats of "
          f"{settings['steps']} steps after {settings['warmup_steps']} warm-up steps; Keras jit_compile={args.jit}")
    print(f"MFU reference: {reference['what']}: {reference['flops_per_second'] / 1e9:.1f} GFLOP/s")
    print(format_table(report))
    print(f"{report['machine']['cores']} cores ({report['machine']['cpu']}), load average before/after "
          f"{report['load_average']['before'][0]:.2f}/{report['load_average']['after'][0]:.2f}, "
          f"{report['seconds']:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"results written to {args.json}")
    return 0 if any("tokens_per_second" in row for row in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())

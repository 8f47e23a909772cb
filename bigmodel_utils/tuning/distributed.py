"""Distributed tuning: one chief oracle and several workers on this machine, each a process of
``python -m bigmodel_utils.tuning``. Used in chapter 5.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigmodel_utils.data import image_data as data_module
from bigmodel_utils.tuning.accounting import TUNERS, make_tuner, read_ledger
from bigmodel_utils.tuning.space import CNNHyperModel, check_fixed, search_split
from bigmodel_utils.validation import check_choice, positive_int

# Distributed tuning: one chief oracle, several workers
# ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for the chief's oracle server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distributed_commands(directory, project_name: str, *, port: int, num_workers: int = 2, kind: str = "random",
                         max_trials: int = 4, epochs: int = 1, num_train: int = 512, num_val: int = 256,
                         seed: int = 0, fixed: dict[str, Any] | None = None) -> list[tuple[dict[str, str], list[str]]]:
    """The environment variables and command line of each process of a distributed search: chief first.

    Every process runs the same command; ``KERASTUNER_TUNER_ID`` says which
    role it has (``chief`` serves the oracle, ``tuner0``, ``tuner1``, ... run
    trials), and ``KERASTUNER_ORACLE_IP``/``KERASTUNER_ORACLE_PORT`` say where
    the chief listens. On several machines, use the chief's address instead of
    127.0.0.1 and a folder every machine can read and write.
    """
    num_workers = positive_int("num_workers", num_workers)
    check_choice("kind", kind, TUNERS)
    argv = [sys.executable, "-m", "bigmodel_utils.tuning", "--directory", str(directory), "--project-name",
            project_name, "--kind", kind, "--max-trials", str(max_trials), "--epochs", str(epochs),
            "--num-train", str(num_train), "--num-val", str(num_val), "--seed", str(seed),
            "--fixed", json.dumps(check_fixed(fixed))]
    roles = ["chief"] + [f"tuner{i}" for i in range(num_workers)]
    return [({"KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)},
             argv) for role in roles]


def run_distributed_search(directory, project_name: str, *, num_workers: int = 2, timeout: float = 300,
                           **search_args) -> dict[str, Any]:
    """Run a chief and ``num_workers`` workers as subprocesses on 127.0.0.1 and wait for the workers.

    The search folder is emptied first. The workers run on the CPU
    (``CUDA_VISIBLE_DEVICES=""``), with the bundled Fashion-MNIST subset.
    When both workers have finished, the chief, which otherwise polls for
    stragglers every 20 seconds, is stopped; its oracle has saved every trial.
    Returns which trials each worker ran (from the ledger), the exit codes and
    the wall time in seconds. ``search_args`` go to :func:`distributed_commands`.
    """
    import shutil

    project_dir = Path(directory) / project_name
    if project_dir.exists():
        shutil.rmtree(project_dir)
    commands = distributed_commands(directory, project_name, port=free_port(), num_workers=num_workers, **search_args)
    base_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3",
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                               os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    logs = [open(Path(directory) / f"{project_name}-{env['KERASTUNER_TUNER_ID']}.log", "w") for env, _ in commands]
    processes = [subprocess.Popen(argv, env={**base_env, **env}, stdout=log, stderr=subprocess.STDOUT)
                 for (env, argv), log in zip(commands, logs)]
    chief, workers = processes[0], processes[1:]
    try:
        for worker in workers:
            worker.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        for log in logs:
            log.close()
    seconds = time.perf_counter() - start
    trials = [r for r in read_ledger(project_dir) if r["event"] == "trial"]
    by_worker: dict[str, list[str]] = {}
    for record in trials:
        by_worker.setdefault(record["tuner_id"], []).append(record["trial_id"])
    failed = {env["KERASTUNER_TUNER_ID"]: p.returncode for (env, _), p in zip(commands[1:], workers) if p.returncode}
    if failed:
        raise RuntimeError(f"distributed workers failed with exit codes {failed}; see the logs in {directory}")
    return {"trials_by_worker": by_worker, "worker_exit_codes": [p.returncode for p in workers],
            "chief_stopped_by_us": chief.returncode not in (0, None), "seconds": seconds,
            "project_dir": str(project_dir)}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bigmodel_utils.tuning",
        description="One process of a distributed KerasTuner search of the improved CNN on Fashion-MNIST. "
                    "Set KERASTUNER_TUNER_ID (chief, tuner0, tuner1, ...), KERASTUNER_ORACLE_IP and "
                    "KERASTUNER_ORACLE_PORT; start the chief first, then the workers, all with the same arguments.")
    parser.add_argument("--directory", required=True, help="folder that holds the search (shared by all processes)")
    parser.add_argument("--project-name", required=True, help="the search's folder name inside --directory")
    parser.add_argument("--kind", choices=TUNERS, default="random")
    parser.add_argument("--max-trials", type=int, default=4, help="trials in all (random, bayesian)")
    parser.add_argument("--max-epochs", type=int, default=3, help="Hyperband's max_epochs")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (random, bayesian)")
    parser.add_argument("--num-train", type=int, default=512, help="training images from the bundled subset")
    parser.add_argument("--num-val", type=int, default=256, help="validation images from the bundled subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed", default="{}", help='JSON of pinned hyperparameters, e.g. {"width": 8}')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bigmodel_utils.tuning`` (one chief or worker process)."""
    args = _parse_args(argv)
    if "KERASTUNER_TUNER_ID" not in os.environ:
        print("KERASTUNER_TUNER_ID is not set: running the whole search in this one process.")
    is_worker = "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")
    hypermodel = CNNHyperModel(seed=args.seed, fixed=json.loads(args.fixed))
    sizes = {"max_epochs": args.max_epochs} if args.kind == "hyperband" else {"max_trials": args.max_trials}
    # Only the chief may start a fresh folder: a worker that deleted it would pull the chief's files away.
    tuner = make_tuner(args.kind, hypermodel, directory=args.directory, project_name=args.project_name,
                       seed=args.seed, overwrite=False, **sizes)
    dataset = data_module.load_fashion_mnist(subset=True)
    (x_train, y_train), (x_val, y_val) = search_split(dataset, args.num_train, args.num_val, seed=args.seed)
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs, verbose=0)
    role = "worker" if is_worker else "chief"
    print(f"{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')} ({role}) done: trained {tuner.epochs_trained} epochs")
    return 0


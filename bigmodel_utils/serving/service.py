"""Running the service from a notebook, and tearing all of it down afterwards.

:func:`running_service` starts ``python -m bigmodel_utils.serving`` (:mod:`~bigmodel_utils.serving.cli`) in a
process of its own and yields a :class:`Service` to talk to it; on leaving the block it stops the whole
process tree, Ray's daemons and workers included, and checks that nothing is left
(:func:`process_tree`, :func:`leftover_processes`, :func:`port_is_open`). Used in chapter 7.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bigmodel_utils.serving.app import serve_config
from bigmodel_utils.serving.batching import DEFAULT_MAX_BATCH_SIZE, batching_settings
from bigmodel_utils.serving.cli import READY_PREFIX, batching_answer, request_batching
from bigmodel_utils.validation import check_int, positive


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now, from 20000 up to the start of the system's range for
    ephemeral ports (32768 on Linux). Ray's own processes (its daemons and workers) bind ports the system
    picks from the ephemeral range while the service starts, so none of them can take this one before the
    service binds it; ``ray start`` clusters give workers 10000-19999, below it. Used in chapter 7.
    """
    try:
        ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768
    candidates = list(range(20000, ephemeral_start)) or list(range(20000, 32768))
    for port in np.random.default_rng().permutation(candidates)[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, int(port)))
            except OSError:
                continue
            return int(port)
    raise RuntimeError(f"no free port found on {host} between 20000 and {ephemeral_start}")


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host``:``port``. Used in chapter 7."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def process_tree(pid: int) -> list:
    """``pid``'s process, all its descendants and every process of the session ``pid`` leads (Ray's actors
    start process groups of their own and outlive their parent, but stay in the session), as
    ``psutil.Process`` objects. Works after ``pid`` has exited too (its session's members remain). Used in
    chapter 7.
    """
    import psutil

    found = {}
    try:
        root = psutil.Process(pid)
        found[root.pid] = root
        found.update((child.pid, child) for child in root.children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    for candidate in psutil.process_iter():
        try:
            if candidate.pid not in found and os.getsid(candidate.pid) == pid:
                found[candidate.pid] = candidate
        except (OSError, psutil.Error):
            continue
    return list(found.values())


def leftover_processes(processes) -> list:
    """The processes of ``processes`` (``psutil.Process`` objects, or pids) still running; zombies waiting for
    their parent count as gone. A ``psutil.Process`` remembers its start time, so a recycled pid is not
    mistaken for a survivor. Used in chapter 7.
    """
    import psutil

    alive = []
    for process in processes:
        try:
            process = process if isinstance(process, psutil.Process) else psutil.Process(int(process))
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def _tail(path: Path, lines: int | None = 30) -> str:
    """The last ``lines`` lines of the text file ``path`` (all of them for None)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines if lines else None:])
    except OSError:
        return "(no log)"


class Service:
    """A service started by :func:`running_service`: its ``url``, the command line's ``pid``, ``port``,
    ``log_path``, ``startup_s`` (wall seconds until ``/health`` answered) and ``timings`` (the command line's
    own: Ray, Serve, deploy). After it stops, ``processes`` holds the process tree it had. Used in chapter 7.
    """

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, control_path: Path):
        self.process, self.pid, self.port = process, process.pid, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path, self._control = log_path, control_path
        self.startup_s: float | None = None
        self.timings: dict[str, float] = {}
        self.processes: list = []
        self.leftovers: list[str] | None = None  # set on leaving running_service's block: empty when clean
        self._seq = 0

    def __repr__(self) -> str:
        state = "running" if self.process.poll() is None else f"exited with {self.process.returncode}"
        return f"Service({self.url}, pid {self.pid}, {state})"

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the command line's log (Ray's and the replicas' messages included)."""
        return _tail(self.log_path, lines)

    def health(self, timeout_s: float = 10.0) -> dict:
        """The service's ``GET /health`` answer as a dict."""
        import httpx

        response = httpx.get(self.url + "/health", timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict, timeout_s: float = 60.0) -> dict:
        """POST ``body`` as JSON to ``path``; returns the answer's JSON. RuntimeError for any status but 200."""
        import httpx

        response = httpx.post(self.url + path, json=body, timeout=timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def _wait_until_ready(self, timeout_s: float) -> None:
        """Wait until the command line printed its ready line and ``/health`` answers; sets ``startup_s`` and
        ``timings``. RuntimeError with the end of the log if it exits or ``timeout_s`` seconds pass first."""
        import httpx

        started, deadline = time.perf_counter(), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.process.returncode} before it answered "
                                   f"on {self.url}; the end of its log ({self.log_path}):\n{self.log_tail()}")
            ready = [line for line in _tail(self.log_path, None).splitlines() if line.startswith(READY_PREFIX)]
            if ready:
                try:
                    if httpx.get(self.url + "/health", timeout=5.0).status_code == 200:
                        self.startup_s = time.perf_counter() - started
                        self.timings = json.JSONDecoder().raw_decode(ready[-1][len(READY_PREFIX):])[0]
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"the service did not answer on {self.url} within startup_timeout={timeout_s:g} s; "
                           f"the end of its log ({self.log_path}):\n{self.log_tail()}")

    def reconfigure(self, max_batch_size: int | None = None, batch_wait_timeout_s: float | dict | None = None,
                    timeout_s: float = 60.0) -> dict:
        """Change the batching settings of every replica in place (no restart) through the deployment's
        ``user_config``; returns the settings now in force, ``{"max_batch_size": n, "batch_wait_timeout_s":
        {endpoint: s}}``. ``max_batch_size=1`` is unbatched; one wait is for both endpoints, a dict for some
        (:func:`~bigmodel_utils.serving.batching.batching_settings` checks them)."""
        settings = batching_settings(max_batch_size, batch_wait_timeout_s)
        if not settings:
            raise ValueError("reconfigure needs max_batch_size or batch_wait_timeout_s, got neither")
        self._seq += 1
        request_batching(self._control, self._seq, settings)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with status {self.process.returncode}; the end of its "
                                   f"log:\n{self.log_tail()}")
            answer = batching_answer(self._control)
            if answer.get("seq") == self._seq:
                if not answer.get("ok"):
                    raise RuntimeError(f"the service could not apply {settings}: {answer.get('error')}")
                return answer["user_config"]
            time.sleep(0.05)
        raise RuntimeError(f"the service did not apply {settings} within {timeout_s:g} s; the end of its "
                           f"log:\n{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> list:
        """SIGTERM the command line (it shuts Serve and Ray down), wait up to ``grace_s`` seconds, then
        SIGKILL every process of its tree still alive; returns the processes that survived even that."""
        import psutil

        # Collected before any signal: once the command line exits, Ray's processes are nobody's children.
        self.processes = process_tree(self.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        _, alive = psutil.wait_procs(leftover_processes(self.processes), timeout=3.0)  # a moment to follow it out
        # whatever is left, and anything started in the session since the list was made
        known = {process.pid for process in self.processes}
        stragglers = [process for process in process_tree(self.pid) if process.pid not in known]
        self.processes.extend(stragglers)
        for process in [*alive, *stragglers]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.process.wait(5.0)  # reap it, so that it is not left a zombie
        except subprocess.TimeoutExpired:
            pass
        psutil.wait_procs(leftover_processes(self.processes), timeout=5.0)
        deadline = time.monotonic() + 5.0
        while port_is_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        return leftover_processes(self.processes)


@contextmanager
def running_service(cnn_path, gpt_dir, gpt_name, port: int | None = None, replicas: int = 1,
                    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                    batch_wait_timeout_s: float | dict | None = None, startup_timeout: float = 120.0,
                    log_path: str | os.PathLike | None = None) -> Iterator[Service]:
    """Run ``python -m bigmodel_utils.serving`` in a process of its own for the ``with`` block; yields a
    :class:`Service` once ``/health`` answers.

    ``port=None`` picks a free port (:func:`free_port`). The command line writes to ``log_path`` (default: a
    new temporary folder, removed after a clean exit, kept after a failure); if it exits or is not ready
    within ``startup_timeout`` seconds, RuntimeError carries the end of its log. On leaving the block, always
    (also when the block raised), the command line gets SIGTERM and the whole process tree (Ray's daemons
    and workers too) SIGKILL if anything is left; then the port must be closed and no process of the tree
    alive, or RuntimeError says which (a warning instead when the block is already raising); either way
    ``service.leftovers`` lists what was left (empty when nothing). The replicas run under the environment's
    ``KERAS_BACKEND``. Used in chapter 7.
    """
    for name, value in (("cnn_path", Path(cnn_path)), ("gpt_dir", Path(gpt_dir) / f"{gpt_name}.keras")):
        if not value.is_file():
            raise FileNotFoundError(f"{name}: no file {value}")
    port = free_port() if port is None else check_int("port", port, 1, 65535)
    startup_timeout = positive("startup_timeout", startup_timeout)
    serve_config(cnn_path, gpt_dir, gpt_name, replicas, max_batch_size, batch_wait_timeout_s)  # checks them
    if port_is_open(port):
        raise ValueError(f"port {port} is already in use; pass another or port=None")
    folder = Path(tempfile.mkdtemp(prefix="bigmodel-serving-"))
    own_log = log_path is None
    log_path = folder / "service.log" if own_log else Path(log_path)
    control = folder / "batching.json"
    command = [sys.executable, "-m", "bigmodel_utils.serving", "--cnn", str(cnn_path), "--gpt-dir", str(gpt_dir),
               "--gpt-name", str(gpt_name), "--port", str(port), "--replicas", str(replicas),
               "--max-batch-size", str(max_batch_size), "--control-file", str(control)]
    if batch_wait_timeout_s is not None:
        command += ["--batch-wait-timeout-s", json.dumps(batch_wait_timeout_s)]
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=environment)
    service = Service(process, port, log_path, control)
    raised = False
    try:
        service._wait_until_ready(startup_timeout)
        yield service
    except BaseException:
        raised = True
        raise
    finally:
        _tear_down(service, raised)
        if not own_log or not (raised or service.leftovers):  # a failed run keeps its log there, nothing else does
            shutil.rmtree(folder, ignore_errors=True)


def _tear_down(service: Service, raised: bool) -> None:
    """Stop ``service`` and set ``service.leftovers``; RuntimeError if anything is left (a warning instead when
    the ``with`` block is already raising)."""
    problems = []
    leftovers = service.stop()
    if leftovers:
        problems.append(f"processes still alive: {[p.pid for p in leftovers]}")
    if port_is_open(service.port):
        problems.append(f"port {service.port} is still open")
    service.leftovers = problems
    if problems:
        message = f"the service did not stop cleanly: {'; '.join(problems)}"
        if raised:
            warnings.warn(message, RuntimeWarning, stacklevel=4)
        else:
            raise RuntimeError(message)

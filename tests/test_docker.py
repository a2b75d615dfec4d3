"""The container files (Dockerfile, .dockerignore, docker-compose.yml), checked without a Docker engine.

No image is built or run here: these tests read the files, and run the image's CMD from a copy
of exactly what the Dockerfile COPYs, with the image's environment. What they cannot check:
the base image, the pip install lines (the CPU-index torch wheels in particular) and the
non-root user at run time.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, stop

WORKDIR = "/app"  # the Dockerfile's WORKDIR; COPY destinations are relative to it


# --- Reading the files ---------------------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def words(args: str) -> list[str]:
    """An instruction's arguments: exec (JSON array) form or shell-style words."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def last(keyword: str) -> str:
    """The arguments of the last `keyword` instruction (the one that takes effect)."""
    found = [rest for kw, rest in dockerfile() if kw == keyword]
    assert found, f"Dockerfile has no {keyword}"
    return found[-1]


def image_env() -> dict[str, str]:
    """Every ENV of the Dockerfile, as the image's environment."""
    env = {}
    for kw, rest in dockerfile():
        if kw == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(rest))
    return env


def copies() -> list[tuple[list[str], str]]:
    """Each COPY as (sources, destination), options such as --chown left out."""
    result = []
    for kw, rest in dockerfile():
        if kw == "COPY":
            args = [w for w in words(rest) if not w.startswith("--")]
            result.append((args[:-1], args[-1]))
    return result


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command (after its --options and CMD), as an argument list."""
    _, _, command = last("HEALTHCHECK").partition("CMD ")
    assert command, "HEALTHCHECK has no CMD"
    return words(command.strip())


# --- .dockerignore -------------------------------------------------------------------------------------------

def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _match(pattern: list[str], parts: list[str]) -> bool:
    """Component-wise match: `*` and `?` stay inside one name (as in Docker), `**` spans any number of folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def is_ignored(path: str, patterns: list[str] | None = None) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repository root) out of the build context.

    The subset of Docker's rules the file uses: patterns are anchored at the context root, a
    matching folder excludes everything under it, `!pattern` re-includes, and the last match wins.
    """
    parts = Path(path).as_posix().strip("/").split("/")
    ignored = False
    for pattern in ignore_patterns() if patterns is None else patterns:
        negate = pattern.startswith("!")
        pieces = pattern.lstrip("!").strip("/").split("/")
        if any(_match(pieces, parts[:n]) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_ignore_matcher_follows_docker_rules():
    """The matcher the other checks rely on, on the cases that matter for this repository."""
    model = "src/fracture_detector/default_model"
    assert is_ignored(f"{model}/checkpoints/epoch1.pt", [f"{model}/checkpoints"])
    assert not is_ignored(f"{model}/model.safetensors", [f"{model}/checkpoints"])
    assert is_ignored("src/fracture_detector/__pycache__/app.cpython-311.pyc", ["**/__pycache__"])
    assert is_ignored("__pycache__/x.pyc", ["**/__pycache__"])
    assert not is_ignored("src/app.py", ["*.py"])  # `*` does not cross folders, as in Docker
    assert not is_ignored("runs/keep", ["runs", "!runs/keep"])


def repo_files(source: str) -> list[str]:
    """Files under `source` that belong to the repository: tracked, or new and not git-ignored."""
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", source],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]  # a file deleted but not yet staged is gone


# --- The Dockerfile ------------------------------------------------------------------------------------------

def test_copy_sources_exist_and_reach_the_build_context():
    """Every COPY source exists, and neither it nor any repository file under it is in .dockerignore."""
    sources = [s for srcs, _ in copies() for s in srcs]
    assert {"requirements.txt", "app.py", "src/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not is_ignored(source), f"COPY {source}: excluded by .dockerignore"
        dropped = [f for f in repo_files(source) if is_ignored(f)]
        assert not dropped, f"COPY {source}: .dockerignore drops {dropped}"
    # The model the image serves by default is package data under src/, so it is in the image.
    assert "src/fracture_detector/default_model/model.safetensors" in repo_files("src/")


def test_dependencies_are_installed_before_the_source_is_copied():
    """requirements.txt is copied and installed alone first, so a source edit reuses the dependency layer."""
    steps = [(kw, rest) for kw, rest in dockerfile() if kw in ("COPY", "RUN")]
    first_copy = next(i for i, (kw, _) in enumerate(steps) if kw == "COPY")
    assert steps[first_copy] == ("COPY", "requirements.txt ./")
    kw, install = steps[first_copy + 1]  # the very next step, before any other COPY
    assert kw == "RUN" and "-r requirements.txt" in install
    assert "--index-url https://download.pytorch.org/whl/cpu" in install  # CPU-only torch, no CUDA libraries


def test_package_is_installed_as_a_regular_wheel():
    """The image installs the package itself, not in editable mode: the bundled model is package data."""
    installs = [rest for kw, rest in dockerfile() if kw == "RUN" and "pip install" in rest and "-r " not in rest]
    assert installs and all("-e" not in words(rest) for rest in installs), installs
    assert any(words(rest)[-1] == "." for rest in installs), installs


def test_image_settings():
    """Slim base, non-root user, the port, a healthcheck, and `python app.py` as the command."""
    assert last("FROM") == "python:3.11-slim"
    assert last("USER") not in ("root", "0", "0:0")
    env = image_env()
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"  # reachable from outside the container
    assert last("EXPOSE").split() == [env["GRADIO_SERVER_PORT"]] == ["7860"]
    assert env["HF_HOME"].startswith("/home/")  # writable by the non-root user
    assert healthcheck_command()[0] == "python"  # slim has no curl
    assert words(last("CMD")) == ["python", "app.py"]


# --- The image's command, outside the image ------------------------------------------------------------------

def build_image_tree(app_dir: Path) -> None:
    """Lay out `app_dir` as the image's WORKDIR: what each COPY brings, less what .dockerignore drops."""
    for sources, dest in copies():
        for source in sources:
            src = ROOT / source
            if src.is_dir():  # Docker copies a folder's contents into the destination
                files = [p for p in src.rglob("*") if p.is_file()]
                target_dir = app_dir / dest
            else:
                files = [src]
                target_dir = app_dir / dest if dest.endswith("/") else (app_dir / dest).parent
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                if is_ignored(rel):
                    continue
                target = target_dir / f.relative_to(src) if src.is_dir() else target_dir / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)


def answers(url: str) -> int | None:
    """The HTTP status of `url`, or None while nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.mark.slow
def test_image_command_serves_the_demo_in_a_clean_tree(tmp_path):
    """The image's CMD and HEALTHCHECK, run on a copy of only what the Dockerfile COPYs, with its ENV.

    The interpreter is the one running the tests: in CI (.ci/run) that is a virtual environment
    created fresh from requirements.txt, as the image's pip step does, though with the PyPI
    torch build rather than the CPU one. Differences from the container, on purpose: the server
    listens on 127.0.0.1 and a free port, the Hugging Face cache is in tmp_path and offline, and
    MODEL_ID is empty, as docker-compose.yml passes it when it is not set.
    """
    app_dir, home = tmp_path / "app", tmp_path / "home"
    build_image_tree(app_dir)
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "GRADIO_", "PYTHON")) and k != "MODEL_ID"}
    env.update(image_env())
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), HF_HOME=str(home / "hf"),
               HF_HUB_OFFLINE="1", MODEL_ID="", HOME=str(home), PYTHONPATH=str(app_dir / "src"),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")

    # The copied package is the one imported, not the repository's (which CI installs in editable mode).
    code = "import importlib.util; print(importlib.util.find_spec('fracture_detector').origin)"
    origin = subprocess.run([sys.executable, "-c", code], cwd=app_dir, env=env, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert Path(origin).resolve().is_relative_to(app_dir.resolve()), origin

    def as_run_here(command: list[str]) -> list[str]:
        return [sys.executable if command[0] == "python" else command[0], *command[1:]]

    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(as_run_here(words(last("CMD"))), cwd=app_dir, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while (status := answers(f"http://127.0.0.1:{port}/")) is None:
            assert proc.poll() is None, f"app.py exited with {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no answer on port {port} in 120 s:\n{log_path.read_text()}"
            time.sleep(1)
        assert status == 200, log_path.read_text()
        health = subprocess.run(as_run_here(healthcheck_command()), cwd=app_dir, env=env, capture_output=True,
                                text=True, timeout=30)
        assert health.returncode == 0, health.stderr
        model_lines = [line for line in log_path.read_text().splitlines() if line.startswith("Model: ")]
        assert model_lines and model_lines[0].startswith("Model: the bundled model"), log_path.read_text()
    finally:
        stop(proc)
    # Once the server is gone, the healthcheck must fail: it really tests the server.
    down = subprocess.run(as_run_here(healthcheck_command()), cwd=app_dir, env=env, capture_output=True, timeout=30)
    assert down.returncode != 0


# --- docker-compose.yml --------------------------------------------------------------------------------------

def test_compose_file():
    """One service built from this folder, on port 7860, with the HF cache on a named volume at HF_HOME."""
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    app = compose["services"]["app"]
    assert app["build"] == "."
    assert "7860:7860" in app["ports"]
    volume, _, target = next(v for v in app["volumes"] if v.endswith(image_env()["HF_HOME"])).partition(":")
    assert target == image_env()["HF_HOME"]
    assert volume in compose["volumes"]  # a named volume, not a host folder
    assert app["restart"] == "unless-stopped"
    assert "HF_HOME" not in app.get("environment", {})  # the volume must stay where the image's cache is
    assert app["environment"]["MODEL_ID"] == "${MODEL_ID:-}"  # unset on the host -> empty -> bundled model


def test_empty_model_id_means_the_bundled_model():
    """docker-compose.yml passes MODEL_ID as an empty string when unset; the server must read that as 'none'.

    (conftest.py puts the repository's src/ on sys.path.)
    """
    from fracture_detector.predict import resolve_for_serving
    from fracture_detector.resources import BUNDLED_MODEL

    assert resolve_for_serving("")[0] == BUNDLED_MODEL

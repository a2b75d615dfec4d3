"""The container files (Dockerfile, .dockerignore, docker-compose.yml), read without a Docker engine.

These checks are quick and run anywhere; tests/test_container.py builds the image and runs it
for real (the image, the demo, the CLI and `docker compose up`).
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

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
    """Each COPY from the build context as (sources, destination), options such as --chown left out (a COPY
    --from another stage takes nothing from the context)."""
    result = []
    for kw, rest in dockerfile():
        if kw == "COPY" and not rest.startswith("--from"):
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
    assert {"wheelhouse/", "requirements.txt", "pyproject.toml", "app.py", "src/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not is_ignored(source), f"COPY {source}: excluded by .dockerignore"
        dropped = [f for f in repo_files(source) if is_ignored(f)]
        assert not dropped, f"COPY {source}: .dockerignore drops {dropped}"
    # The model the image serves by default is package data under src/, so it is in the image.
    assert "src/fracture_detector/default_model/model.onnx" in repo_files("src/")


def test_dependencies_are_installed_before_the_source_is_copied_and_bring_no_pytorch():
    """The serving dependencies are installed before the source is copied, so a source edit reuses that
    layer; nothing installs PyTorch."""
    steps = [(kw, rest) for kw, rest in dockerfile() if kw in ("COPY", "RUN")]
    dependencies = next(i for i, (kw, rest) in enumerate(steps) if kw == "RUN" and "-r serving-requirements" in rest)
    source = next(i for i, (kw, rest) in enumerate(steps) if kw == "COPY" and words(rest)[0] == "src/")
    assert dependencies < source
    assert "['project']['dependencies']" in steps[dependencies][1]  # pyproject.toml's list: the serving install
    assert not any("torch" in rest for kw, rest in steps if kw == "RUN" and "pip install" in rest)


def test_package_is_installed_as_a_regular_wheel():
    """The image installs the package itself, not in editable mode: the bundled model is package data."""
    installs = [rest for kw, rest in dockerfile() if kw == "RUN" and "pip install" in rest and "-r " not in rest]
    assert installs and all("-e" not in words(rest) for rest in installs), installs
    assert any(words(rest)[-1] == "." for rest in installs), installs


def test_image_settings():
    """Two stages on one base (python:3.11-slim unless given), non-root user, the port, a healthcheck, and
    `python app.py` as the command."""
    instructions = dockerfile()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    # Two stages only: Docker's classic builder builds every stage of the file, whatever the target.
    assert [rest for kw, rest in instructions if kw == "FROM"] == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    assert last("USER") not in ("root", "0", "0:0")
    env = image_env()
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"  # reachable from outside the container
    assert last("EXPOSE").split() == [env["GRADIO_SERVER_PORT"]] == ["7860"]
    assert env["HF_HOME"].startswith("/home/")  # writable by the non-root user
    assert healthcheck_command()[0] == "python"  # no curl in the image
    assert words(last("CMD")) == ["python", "app.py"]


# --- docker-compose.yml --------------------------------------------------------------------------------------

def test_compose_file():
    """One service built from this folder, on port 7860, with the HF cache on a named volume at HF_HOME."""
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    app = compose["services"]["app"]
    assert app["build"]["context"] == "." and app["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim}"
    assert "${PORT:-7860}:7860" in app["ports"]  # 7860 unless PORT is set
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
    from fracture_detector.loading import resolve_for_serving
    from fracture_detector.resources import BUNDLED_MODEL

    assert resolve_for_serving("")[0] == BUNDLED_MODEL

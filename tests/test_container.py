"""The image, built and run for real: the demo answers and refuses over HTTP, the CLI classifies a mounted
folder, and `docker compose up` serves; everything started is stopped.

It needs a Docker engine. If none runs, the test starts `dockerd` (as root); if the base image
is missing, it makes one with debootstrap (`scripts/docker_base.sh`: no image registry is
needed); it downloads the wheels into `wheelhouse/` on the host (`scripts/wheelhouse.py`: the
build reaches no package index). Where the engine cannot start, the tests fail with the
reason when FRACTURE_DETECTOR_REQUIRE_DOCKER=1 (as in CI, `.ci/run`), and are skipped with
it otherwise.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT, free_port

from fracture_detector.resources import example_xrays

pytestmark = pytest.mark.slow
BASE_IMAGE = "fracture-detector-base:bookworm"
REQUIRED = os.environ.get("FRACTURE_DETECTOR_REQUIRE_DOCKER") == "1"


def docker(*args, check: bool = True, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        command = " ".join(map(str, args))[:200]
        raise AssertionError(f"docker {command} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc


def engine_problem(log_dir) -> tuple[str | None, subprocess.Popen | None]:
    """(None, the dockerd this started or None) when an engine answers; else (why not, None)."""
    if not shutil.which("docker"):
        return "no docker command: install Docker (Debian: apt-get install docker.io)", None
    if docker("info", check=False, timeout=60).returncode == 0:
        return None, None
    if not shutil.which("dockerd"):
        return "no Docker engine answers and there is no dockerd to start (Debian: apt-get install docker.io)", None
    if os.geteuid() != 0:
        return "no Docker engine answers, and starting dockerd needs root", None
    log = open(log_dir / "dockerd.log", "w")
    daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if docker("info", check=False, timeout=60).returncode == 0:
            return None, daemon
        if daemon.poll() is not None:
            break
        time.sleep(1)
    daemon.terminate()
    daemon.wait()
    tail = (log_dir / "dockerd.log").read_text().strip().splitlines()[-3:]
    return "dockerd did not start: " + " | ".join(tail), None


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    problem, daemon = engine_problem(tmp_path_factory.mktemp("dockerd"))
    if problem:
        (pytest.fail if REQUIRED else pytest.skip)(f"Docker engine: {problem}")
    yield
    if daemon is not None:  # stop what this started
        daemon.terminate()
        daemon.wait(60)


@pytest.fixture(scope="module")
def image(engine):
    """The image, built from this checkout on the debootstrap base with the host's wheelhouse; its tag."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        made = subprocess.run([str(ROOT / "scripts" / "docker_base.sh"), BASE_IMAGE], capture_output=True, text=True,
                              timeout=900)
        assert made.returncode == 0, f"could not make the base image:\n{made.stdout[-2000:]}{made.stderr[-2000:]}"
    wheels = subprocess.run([sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), str(ROOT / "wheelhouse")],
                            capture_output=True, text=True, timeout=900)
    assert wheels.returncode == 0, wheels.stderr[-3000:]
    tag = f"fracture-detector:test-{uuid.uuid4().hex[:8]}"
    docker("build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", "PIP_NO_INDEX=1",
           "--build-arg", "PIP_FIND_LINKS=/wheelhouse", "-t", tag, ROOT)
    yield tag
    docker("image", "rm", "-f", tag, check=False)


def first_answer(url: str, timeout: float = 120):
    """The first /predict answer of the demo at `url` for an example X-ray, waiting until it serves."""
    from gradio_client import Client, handle_file

    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(url, verbose=False).predict(handle_file(str(example_xrays()[0])), api_name="/predict")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_image_serves_answers_and_refuses(image, tmp_path):
    from gradio_client import Client, handle_file

    port, name = free_port(), f"fd-test-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:7860", image)
    try:
        heatmap, label, decision = first_answer(f"http://127.0.0.1:{port}/")
        assert heatmap and label["label"] in ("fracture suspected", "no fracture detected") and "threshold" in decision
        (tmp_path / "notes.png").write_text("a text file, not an image\n")
        _, label, decision = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(tmp_path / "notes.png")), api_name="/predict")
        assert not label and decision.startswith("**Could not read this file**")
        assert docker("exec", name, "id", "-u").stdout.strip() != "0"  # not root
        no_torch = "import importlib.util; print(importlib.util.find_spec('torch'))"
        assert docker("exec", name, "python", "-c", no_torch).stdout.strip() == "None"
        health = docker("inspect", "--format", "{{json .Config.Healthcheck.Test}}", name).stdout
        assert "urllib" in health
        logs = docker("logs", name).stdout
        assert "Model: the bundled model" in logs, logs
    finally:
        docker("rm", "-f", name, check=False)


def test_the_cli_in_the_image_classifies_a_mounted_folder(image, tmp_path):
    folder = tmp_path / "xrays"
    folder.mkdir()
    for path in example_xrays()[:3]:
        shutil.copy(path, folder)
    folder.chmod(0o777)  # the image's user (uid 1000) writes the CSV into it
    proc = docker("run", "--rm", "-v", f"{folder}:/data", image, "fracture-detector", "predict", "/data",
                  "--csv", "/data/results.csv", "--quiet")
    assert "3 classified, 0 failed" in proc.stderr and "run by onnxruntime" in proc.stderr
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.path.basename(r["path"]) for r in rows) == sorted(p.name for p in example_xrays()[:3])
    assert all(r["decision"] in ("fracture suspected", "no fracture detected") and r["error"] == "" for r in rows)


def test_compose_up_serves_the_demo(image, tmp_path):
    compose = shutil.which("docker-compose")
    command = [compose] if compose else ["docker", "compose"]
    port, project = free_port(), f"fdtest{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "IMAGE": image, "PORT": str(port), "BASE_IMAGE": BASE_IMAGE}
    up = subprocess.run([*command, "-p", project, "up", "-d", "--no-build"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        heatmap, label, _ = first_answer(f"http://127.0.0.1:{port}/")
        assert heatmap and label["label"]
    finally:
        down = subprocess.run([*command, "-p", project, "down", "-v"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    left = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "-q").stdout.strip()
    assert not left, f"compose left containers: {left}"

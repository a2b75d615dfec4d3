"""The container, built and measured: the serving image's size against the full-install image's (with `--full`:
both built here on the same base, the full one from `bench/Dockerfile.full`), the cold start in the container to
the first answer, and one image end to end inside it, each beside the same measured on the host in the same run.

The images are built as tests/test_container.py builds them: on the debootstrap base
(`scripts/docker_base.sh`), from a host wheelhouse (`scripts/wheelhouse.py`). Cold start: from
`docker run` to the first `/predict` answer (`gradio_client`, an example X-ray), against
`python app.py` on the host, alternating. End to end: `Predictor.predict` of an example file,
p50 of 200 calls after 20 warm-up calls, in the container and on the host, alternating.

    python bench/container.py [--full] [--rounds 3]      # needs a running Docker engine
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid

from app_speed import ROOT, free_port, start_app, stop
from common import add_out_argument, alternate, fmt_range, loadavg, md_table, met, summary, write_results

BASE_IMAGE = "fracture-detector-base:bookworm"
TARGET_IMAGE_GB = 1.5  # issue 22
TARGET_P50_MS = 10.0  # issue 20: one image end to end, ONNX Runtime
END_TO_END = """
import json, statistics, sys, time
import fracture_detector
from fracture_detector.resources import example_xrays
predictor, example = fracture_detector.load(), example_xrays()[0]
for _ in range(20):
    predictor.predict(example)
times = []
for _ in range(200):
    t = time.perf_counter()
    predictor.predict(example)
    times.append(time.perf_counter() - t)
print(json.dumps({"p50_ms": 1000 * statistics.median(times), "backend": predictor.backend}))
"""


def docker(*args: str, timeout: float = 3600) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"docker {' '.join(args)[:120]} failed: {done.stderr[-1500:]}")
    return done.stdout


def build(tag: str, *options: str) -> float:
    """Build the Dockerfile as the container test does; returns the image's size in GB."""
    docker("build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", "PIP_NO_INDEX=1",
           "--build-arg", "PIP_FIND_LINKS=/wheelhouse", *options, "-t", tag, str(ROOT))
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag)) / 1e9


def container_cold_start(tag: str) -> float:
    """Seconds from `docker run` to the first /predict answer."""
    from gradio_client import Client, handle_file

    from fracture_detector.resources import example_xrays

    port, name = free_port(), f"fd-bench-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:7860", tag)
    try:
        while True:
            try:
                Client(f"http://127.0.0.1:{port}/", verbose=False).predict(handle_file(str(example_xrays()[0])),
                                                                          api_name="/predict")
                return time.perf_counter() - t0
            except Exception:
                if time.perf_counter() - t0 > 300:
                    raise
                time.sleep(0.05)
    finally:
        docker("rm", "-f", name)


def host_cold_start() -> float:
    proc, seconds = start_app(free_port())
    stop(proc)
    return seconds


def end_to_end_ms(command: list[str], env: dict | None = None) -> float:
    """p50 milliseconds of `END_TO_END` run by `command` (a Python, or `docker exec` of the image's)."""
    done = subprocess.run([*command, "-c", END_TO_END], capture_output=True, text=True, check=True, timeout=600,
                          env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnxruntime", result
    return result["p50_ms"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="also build the full-install image (downloads PyTorch)")
    p.add_argument("--rounds", type=int, default=3)
    add_out_argument(p, __file__)
    args = p.parse_args()
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        sys.exit("no Docker engine answers: start dockerd first")
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        subprocess.run([str(ROOT / "scripts" / "docker_base.sh"), BASE_IMAGE], check=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), str(ROOT / "wheelhouse"),
                    *(["--train"] if args.full else [])], check=True)
    tag = f"fracture-detector:bench-{uuid.uuid4().hex[:8]}"
    name = f"fd-bench-{uuid.uuid4().hex[:8]}"
    try:
        sizes = {"serving image": build(tag)}
        if args.full:
            sizes["full-install image (torch, timm, datasets, accelerate: from PyPI)"] = build(
                tag + "-full", "--file", str(ROOT / "bench" / "Dockerfile.full"))
            docker("image", "rm", tag + "-full")
        sizes["base image (Debian bookworm + Python 3.11, debootstrap)"] = \
            int(docker("image", "inspect", "--format", "{{.Size}}", BASE_IMAGE)) / 1e9
        before = loadavg()
        docker("run", "-d", "--name", name, "--entrypoint", "sleep", tag, "infinity")
        cold = alternate({"container": lambda: container_cold_start(tag), "host": host_cold_start}, args.rounds)
        e2e = alternate({"container": lambda: end_to_end_ms(["docker", "exec", name, "python"]),
                         "host": lambda: end_to_end_ms([sys.executable], {"PYTHONPATH": str(ROOT / "src")})},
                        args.rounds)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "image", "rm", "-f", tag, tag + "-full"], capture_output=True)
        if args.full:  # the train extra's wheels are gigabytes: keep only what the serving build needs
            for wheel in (ROOT / "wheelhouse").glob("*.whl"):
                wheel.unlink()
            subprocess.run([sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), str(ROOT / "wheelhouse")],
                           check=True)
    serving_gb = sizes["serving image"]
    rows = [[what, f"{gb:.2f} GB", f"<= {TARGET_IMAGE_GB:g} GB" if what == "serving image" else "",
             met(gb <= TARGET_IMAGE_GB) if what == "serving image" else ""] for what, gb in sizes.items()]
    rows += [["cold start in the container: `docker run` to the first answer", fmt_range(cold["container"]) + " s",
              "", ""],
             ["cold start on the host: `python app.py` to the first answer (baseline)", fmt_range(cold["host"]) + " s",
              "", ""],
             ["one image end to end in the container (Predictor.predict, ONNX Runtime), p50",
              fmt_range(e2e["container"]) + " ms", f"<= {TARGET_P50_MS:g} ms",
              met(summary(e2e["container"])["median"] <= TARGET_P50_MS)],
             ["one image end to end on the host (baseline), p50", fmt_range(e2e["host"]) + " ms", "", ""]]
    markdown = (f"`python bench/container.py{' --full' if args.full else ''} --rounds {args.rounds}`: images built "
                f"on the debootstrap base from a host wheelhouse; median (min, max) of {args.rounds} alternating runs."
                "\n\n" + md_table(["", "measured", "target", "met"], rows))
    write_results(args.out, {"image_gb": sizes, "cold_start_s": {k: summary(v) for k, v in cold.items()},
                             "end_to_end_ms": {k: summary(v) for k, v in e2e.items()},
                             "raw": {"cold": cold, "e2e": e2e},
                             "serving_vs_full": {k: serving_gb / v for k, v in sizes.items() if k.startswith("full")}},
                  markdown, before)


if __name__ == "__main__":
    main()

"""Speed of the demo: model latency for one image, cold start to the first answer, and
throughput with many concurrent `gradio_client` users.

1. Inference for one image (model only, preprocessed pixels, `torch` threads as set): p50/p90
   over many runs; Grad-CAM for one image likewise; and the whole per-request work of the app
   (decode, X-ray check, model, Grad-CAM, overlay).
2. Cold start: from launching `python app.py` to the first `/predict` answer over HTTP.
3. Concurrency: U users (one `gradio_client.Client` each, threads spread over a few client
   processes) call `/predict` R times each;
   predictions/s and errors, for 1 user (the baseline) and for U users, in the same run; the
   ratio shows what request batching (`batch=True`) buys. Clients and server share the machine.

    python bench/app_speed.py [--users 32] [--requests 8] [--client-processes 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


def percentiles(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return f"p50 {statistics.median(ms):.1f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms (n={len(ms)})"


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def inference(runs: int) -> None:
    import numpy as np

    from fracture_detector.heatmap import overlay
    from fracture_detector.predict import Predictor, read_xray

    predictor = Predictor()
    xray = read_xray(EXAMPLES[0], predictor.image_size)
    pixels = xray.pixels[None]
    print("model, one image:", percentiles(timed(lambda: predictor.predict_pixels(pixels), runs)))
    print("model + Grad-CAM (one pass), one image:",
          percentiles(timed(lambda: predictor.predict_with_heatmaps(pixels), runs)))

    def whole_request():
        x = read_xray(EXAMPLES[0], predictor.image_size)
        _, cams = predictor.predict_with_heatmaps(x.pixels[None])
        overlay(x.image, cams[0])

    print("whole app request in-process (decode, check, model, Grad-CAM, overlay):",
          percentiles(timed(whole_request, runs // 2)))
    batch = np.repeat(pixels, 32, axis=0)
    per = [t / 32 for t in timed(lambda: predictor.predict_with_heatmaps(batch), 10)]
    print("model + Grad-CAM in a batch of 32, per image:", percentiles(per))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int) -> tuple[subprocess.Popen, float]:
    """Launch `python app.py` and wait for its first /predict answer; returns the process and the seconds."""
    from gradio_client import Client, handle_file

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            Client(f"http://127.0.0.1:{port}/", verbose=False).predict(handle_file(str(EXAMPLES[0])),
                                                                      api_name="/predict")
            return proc, time.perf_counter() - t0
        except Exception:
            if proc.poll() is not None or time.perf_counter() - t0 > 300:
                raise RuntimeError("the app did not start") from None
            time.sleep(0.05)


def user_session(url: str, first: int, users: int, requests: int) -> int:
    """`users` users (threads, one Client each) in this process, R requests each; returns the errors."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]

    def user(k: int) -> int:
        errors = 0
        for r in range(requests):
            example = EXAMPLES[(first + k + r) % len(EXAMPLES)]
            try:
                _, label, _ = clients[k].predict(handle_file(str(example)), api_name="/predict")
                errors += not label or "confidences" not in label
            except Exception:
                errors += 1
        return errors

    with ThreadPoolExecutor(users) as pool:
        return sum(pool.map(user, range(users)))


def load(url: str, users: int, requests: int, processes: int) -> tuple[float, int]:
    """U users x R requests each, concurrently, spread over client processes (one Python process
    with 32 client threads is itself the bottleneck: the GIL); returns (predictions/s, errors)."""
    processes = min(processes, users)
    shares = [users // processes + (i < users % processes) for i in range(processes)]
    firsts = [sum(shares[:i]) for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(user_session, [url] * processes, firsts, [1] * processes, [1] * processes))  # warm-up
        t = time.perf_counter()
        errors = sum(pool.map(user_session, [url] * processes, firsts, shares, [requests] * processes))
    return users * requests / (time.perf_counter() - t), errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--requests", type=int, default=8, help="per user")
    p.add_argument("--runs", type=int, default=200, help="for the latency percentiles")
    p.add_argument("--client-processes", type=int, default=4, help="processes the users are spread over")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the in-process latency")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs")
    inference(args.runs)

    proc, cold = start_app(free_port())
    try:
        print(f"cold start to the first answer: {cold:.1f} s")
    finally:
        proc.terminate()
        proc.wait()
    port = free_port()
    proc, _ = start_app(port)
    try:
        url = f"http://127.0.0.1:{port}/"
        single = args.users * args.requests // 4
        one, one_errors = load(url, 1, single, 1)
        print(f"1 user: {one:.1f} predictions/s, {one_errors} errors")
        before = cpu_seconds(proc.pid)
        many, many_errors = load(url, args.users, args.requests, args.client_processes)
        per = (cpu_seconds(proc.pid) - before) / (args.users * args.requests) * 1000
        print(f"{args.users} users: {many:.1f} predictions/s, {many_errors} errors "
              f"({many / one:.2f}x the single user); server CPU {per:.0f} ms per prediction")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()

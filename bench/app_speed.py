"""Speed of the demo: latency for one image, cold start to the first answer, and throughput with
many concurrent `gradio_client` users against a single user.

1. Latency, in-process (`--threads` torch threads): the model for one image (`predict_pixels`:
   uint8 pixels to a calibrated prediction), the model with Grad-CAM, the whole per-request work
   of the app (decode, X-ray check, model, Grad-CAM, overlay) and Grad-CAM in a batch of 32 per
   image. Each is warmed up, then all run in alternating blocks of `--runs` calls for `--rounds`
   rounds; p50 and p90 are taken per block and summarised by median, min and max.
2. Cold start, `--cold-starts` times: from launching `python app.py` to the first `/predict`
   answer over HTTP.
3. Concurrency, against one server: 1 user (the baseline) and U users (one `gradio_client.Client`
   each, threads spread over a few client processes), R requests each, in alternating order for
   `--rounds` rounds; predictions/s, errors and the server's CPU time per prediction. The ratio
   shows what request batching (`batch=True`) buys. Clients and server share the machine.

    python bench/app_speed.py [--users 32] [--requests 8] [--client-processes 4] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from common import (
    add_out_argument,
    alternate,
    command_line,
    fmt_range,
    fmt_ratio,
    loadavg,
    md_table,
    met,
    ratios,
    summary,
    timed,
    write_results,
)

from fracture_detector.resources import example_xrays

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = example_xrays()
TARGET_P50_MS = 10.0
TARGET_COLD_S = 8.0
TARGET_PREDICTIONS_S = 100.0


def p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def latency_side(fn: Callable[[], object], runs: int, blocks: list[list[float]], per: int = 1) -> Callable[[], float]:
    """One block of `runs` timed calls per measurement (ms per image, `per` images a call); returns the p50."""

    def measure() -> float:
        ms = [timed(fn) * 1000 / per for _ in range(runs)]
        blocks.append(ms)
        return statistics.median(ms)

    return measure


def latencies(runs: int, rounds: int) -> dict:
    """p50/p90 (ms) of each in-process path, in alternating blocks."""
    import numpy as np

    from fracture_detector.heatmap import overlay
    from fracture_detector.predict import Predictor, read_xray

    predictor = Predictor()
    pixels = read_xray(EXAMPLES[0], predictor.image_size).pixels[None]
    batch = np.repeat(pixels, 32, axis=0)

    def whole_request() -> None:
        x = read_xray(EXAMPLES[0], predictor.image_size)
        _, cams = predictor.predict_with_heatmaps(x.pixels[None])
        overlay(x.image, cams[0])

    paths = {
        "model, one image (predict_pixels)": (lambda: predictor.predict_pixels(pixels), runs, 1),
        "model + Grad-CAM, one image": (lambda: predictor.predict_with_heatmaps(pixels), runs, 1),
        "whole request in-process (decode, check, model, Grad-CAM, overlay)": (whole_request, runs // 2, 1),
        "model + Grad-CAM in a batch of 32, per image": (lambda: predictor.predict_with_heatmaps(batch), 10, 32),
    }
    blocks: dict[str, list[list[float]]] = {k: [] for k in paths}
    p50s = alternate({k: latency_side(fn, n, blocks[k], per) for k, (fn, n, per) in paths.items()}, rounds)
    return {k: {"p50_ms": summary(p50s[k]), "p90_ms": summary([p90(b) for b in blocks[k][1:]]),
                "calls_per_block": paths[k][1]} for k in paths}


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
                proc.kill()
                raise RuntimeError("the app did not start") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait()


def cold_start() -> float:
    proc, seconds = start_app(free_port())
    stop(proc)
    return seconds


def user_session(url: str, first: int, users: int, requests: int) -> list[str]:
    """`users` users (threads, one Client each) in this process, R requests each; returns what went wrong."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]

    def user(k: int) -> list[str]:
        errors = []
        for r in range(requests):
            example = EXAMPLES[(first + k + r) % len(EXAMPLES)]
            try:
                _, label, decision = clients[k].predict(handle_file(str(example)), api_name="/predict")
                if not label or "confidences" not in label:
                    errors.append(f"{example.name}: no probabilities: {decision}")
            except Exception as e:  # every failure is counted and described
                errors.append(f"{example.name}: {type(e).__name__}: {e}"[:300])
        return errors

    with ThreadPoolExecutor(users) as pool:
        return [e for errors in pool.map(user, range(users)) for e in errors]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_side(url: str, server_pid: int, users: int, requests: int, processes: int,
              details: list[dict]) -> Callable[[], float]:
    """U users x R requests each, spread over client processes (one Python process with 32 client
    threads is itself the bottleneck: the GIL); returns predictions/s, appends errors and server CPU."""
    processes = min(processes, users)
    shares = [users // processes + (i < users % processes) for i in range(processes)]
    firsts = [sum(shares[:i]) for i in range(processes)]

    def measure() -> float:
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(user_session, [url] * processes, firsts, [1] * processes, [1] * processes))  # warm-up
            cpu, t = cpu_seconds(server_pid), time.perf_counter()
            errors = [e for found in pool.map(user_session, [url] * processes, firsts, shares,
                                              [requests] * processes) for e in found]
            seconds = time.perf_counter() - t
        n = users * requests
        details.append({"predictions": n, "errors": len(errors), "error_messages": errors[:5], "seconds": seconds,
                        "server_cpu_ms_per_prediction": (cpu_seconds(server_pid) - cpu) / n * 1000})
        return n / seconds

    return measure


def concurrency(users: int, requests: int, processes: int, rounds: int) -> dict:
    """1 user against `users` users on one server, alternating."""
    port = free_port()
    proc, _ = start_app(port)
    url = f"http://127.0.0.1:{port}/"
    one, many = f"1 user, {users * requests // 4} requests", f"{users} users, {requests} requests each"
    details: dict[str, list[dict]] = {one: [], many: []}
    try:
        rates = alternate({one: load_side(url, proc.pid, 1, users * requests // 4, 1, details[one]),
                           many: load_side(url, proc.pid, users, requests, processes, details[many])}, rounds)
    finally:
        stop(proc)
    details = {k: v[1:] for k, v in details.items()}  # the first of each is the untimed warm-up
    return {"one": one, "many": many, "predictions_per_second": rates, "details": details,
            "ratio": ratios(rates[many], rates[one])}


def report(lat: dict, cold: list[float], conc: dict, args: argparse.Namespace) -> tuple[dict, str]:
    model_p50 = lat["model, one image (predict_pixels)"]["p50_ms"]["median"]
    cold_s = summary(cold)["median"]
    many = conc["many"]
    rate = summary(conc["predictions_per_second"][many])["median"]
    errors = sum(d["errors"] for d in conc["details"][many])
    cpu = [d["server_cpu_ms_per_prediction"] for d in conc["details"][many]]
    lat_rows = [[k, fmt_range(v["p50_ms"]["runs"]), fmt_range(v["p90_ms"]["runs"])] for k, v in lat.items()]
    rate_rows = [[k, fmt_range(v)] for k, v in conc["predictions_per_second"].items()]
    markdown = "\n".join([
        f"`{command_line()}`: {args.threads} torch threads in-process, median of {args.rounds} alternating "
        f"runs (min, max); cold start {len(cold)} runs.",
        "",
        md_table(["in-process latency", "p50 (ms)", "p90 (ms)"], lat_rows),
        "",
        md_table(["over HTTP (one server)", "predictions/s"], rate_rows),
        "",
        md_table(["", "measured", "target", ""], [
            ["model inference, one image, p50", f"{model_p50:.1f} ms", f"<= {TARGET_P50_MS:g} ms",
             met(model_p50 <= TARGET_P50_MS)],
            ["cold start to the first answer", fmt_range(cold) + " s", f"<= {TARGET_COLD_S:g} s",
             met(cold_s <= TARGET_COLD_S)],
            [f"{args.users} users", f"{rate:.1f} predictions/s, {errors} errors",
             f">= {TARGET_PREDICTIONS_S:g} predictions/s, 0 errors",
             met(rate >= TARGET_PREDICTIONS_S and errors == 0)],
            [f"{args.users} users / 1 user", fmt_ratio(conc["ratio"]), "", ""],
            ["server CPU per prediction", fmt_range(cpu, "{:.0f}") + " ms", "", ""],
        ]),
    ])
    results = {"latency": lat, "cold_start_seconds": summary(cold),
               "predictions_per_second": {k: summary(v) for k, v in conc["predictions_per_second"].items()},
               "load_details": conc["details"], "ratio_many_vs_one": summary(conc["ratio"]),
               "users": args.users, "requests_per_user": args.requests, "client_processes": args.client_processes,
               "targets": {"model_p50_ms": TARGET_P50_MS, "cold_start_s": TARGET_COLD_S,
                           "predictions_per_second": TARGET_PREDICTIONS_S}}
    return results, markdown


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--requests", type=int, default=8, help="per user")
    p.add_argument("--runs", type=int, default=100, help="timed calls per latency block")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cold-starts", type=int, default=3)
    p.add_argument("--client-processes", type=int, default=4, help="processes the users are spread over")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the in-process latency")
    add_out_argument(p, __file__)
    args = p.parse_args()
    import torch

    before = loadavg()
    torch.set_num_threads(args.threads)
    lat = latencies(args.runs, args.rounds)
    cold = [cold_start() for _ in range(args.cold_starts)]
    print(f"cold starts (s): {cold}", flush=True)
    conc = concurrency(args.users, args.requests, args.client_processes, args.rounds)
    results, markdown = report(lat, cold, conc, args)
    write_results(args.out, results, markdown, before)


if __name__ == "__main__":
    main()

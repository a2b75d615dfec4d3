"""Speed of the demo: one image end to end, cold start to the first answer, and throughput with many
concurrent `gradio_client` users, against a bare Gradio app measured in the same run.

1. Latency, in-process (`--threads` threads), each path by ONNX Runtime (what the app runs) and,
   for comparison, by PyTorch: one image end to end (`Predictor.predict` of a file: decode,
   checks, model, calibration), the model alone (`predict_pixels`), the model with its heatmap,
   the whole per-request work of the app (decode, checks, model, heatmap, overlay) and the model
   with heatmaps in a batch of 32, per image. Each is warmed up, then all run in alternating
   blocks of `--runs` calls for `--rounds` rounds; p50 and p90 are taken per block and
   summarised by median, min and max.
2. Cold start, `--cold-starts` times: from launching `python app.py` to the first `/predict`
   answer over HTTP (the ONNX export of the bundled model already in the cache).
3. Concurrency: the demo (`python app.py`) and a bare Gradio app (`bench/bare_app.py`: a
   `gr.File` upload -> a `gr.Label` of fixed probabilities, `batch=True`, the demo's queue
   settings) run side by side. Each gets 1 user and U users (one `gradio_client.Client` each,
   threads spread over a few client processes), R requests each, in alternating order for
   `--rounds` rounds: predictions/s, errors, the server's CPU time per prediction, and the demo
   server's resident memory after each round of U users (it must level off). The bare app
   measures what Gradio itself allows on this machine. Clients and servers share the machine.

    python bench/app_speed.py [--users 32] [--requests 20] [--client-processes 4] [--threads 2] [--rounds 3]
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
BARE_APP = Path(__file__).resolve().parent / "bare_app.py"
EXAMPLES = example_xrays()
TARGET_P50_MS = 10.0
TARGET_COLD_S = 8.0
TARGET_SHARE_OF_BARE = 0.60
TARGET_RSS_GROWTH = 0.10
END_TO_END = "one image end to end (Predictor.predict of a file)"


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
    """p50/p90 (ms) of each in-process path, by each runtime, in alternating blocks."""
    import numpy as np

    from fracture_detector.heatmap import overlay
    from fracture_detector.predict import Predictor, read_xray

    paths = {}
    for predictor in (Predictor(), Predictor(backend="torch")):
        pixels = read_xray(EXAMPLES[0], predictor.image_size).pixels[None]
        batch = np.repeat(pixels, 32, axis=0)

        def whole_request(predictor=predictor) -> None:
            x = read_xray(EXAMPLES[0], predictor.image_size)
            _, cams = predictor.predict_with_heatmaps(x.pixels[None], [x.inverted])
            overlay(x.image, cams[0])

        by = f", {'ONNX Runtime' if predictor.backend == 'onnxruntime' else 'PyTorch'}"
        paths |= {
            END_TO_END + by: (lambda p=predictor: p.predict(EXAMPLES[0]), runs, 1),
            "model, one image (predict_pixels)" + by: (lambda p=predictor, x=pixels: p.predict_pixels(x), runs, 1),
            "model + heatmap, one image" + by: (lambda p=predictor, x=pixels: p.predict_with_heatmaps(x), runs, 1),
            "whole request in-process (decode, checks, model, heatmap, overlay)" + by: (whole_request, runs // 2, 1),
            "model + heatmaps in a batch of 32, per image" + by: (
                lambda p=predictor, x=batch: p.predict_with_heatmaps(x), 10, 32),
        }
    blocks: dict[str, list[list[float]]] = {k: [] for k in paths}
    p50s = alternate({k: latency_side(fn, n, blocks[k], per) for k, (fn, n, per) in paths.items()}, rounds)
    return {k: {"p50_ms": summary(p50s[k]), "p90_ms": summary([p90(b) for b in blocks[k][1:]]),
                "calls_per_block": paths[k][1]} for k in paths}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, script: Path = ROOT / "app.py", env: dict | None = None,
              python: str = sys.executable) -> tuple[subprocess.Popen, float]:
    """Launch `python app.py` (or another app script, or another Python; `env` in place of this process's
    environment) and wait for its first /predict answer; returns the process and the seconds."""
    from gradio_client import Client, handle_file

    env = {**(os.environ if env is None else env), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, str(script), "--port", str(port)], env=env,
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
                answer = clients[k].predict(handle_file(str(example)), api_name="/predict")
                label = answer[1] if isinstance(answer, tuple | list) else answer  # the demo: (heatmap, label, text)
                if not label or "confidences" not in label:
                    errors.append(f"{example.name}: no probabilities: {answer}")
            except Exception as e:  # every failure is counted and described
                errors.append(f"{example.name}: {type(e).__name__}: {e}"[:300])
        return errors

    with ThreadPoolExecutor(users) as pool:
        return [e for errors in pool.map(user, range(users)) for e in errors]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


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
                        "server_cpu_ms_per_prediction": (cpu_seconds(server_pid) - cpu) / n * 1000,
                        "server_rss_mb_after": rss_mb(server_pid)})
        return n / seconds

    return measure


def concurrency(users: int, requests: int, processes: int, rounds: int) -> dict:
    """The demo and the bare Gradio app, each at 1 user and at `users` users, alternating."""
    sides, details, many, servers = {}, {}, {}, []
    try:
        for name, script in (("demo", ROOT / "app.py"), ("bare Gradio app", BARE_APP)):
            port = free_port()
            proc = start_app(port, script)[0]
            servers.append(proc)
            for n, r in ((1, users * requests // 4), (users, requests)):
                side = f"{name}, {n} user{'s' if n > 1 else ''}, {r} requests{' each' if n > 1 else ''}"
                details[side] = []
                sides[side] = load_side(f"http://127.0.0.1:{port}/", proc.pid, n, r, processes if n > 1 else 1,
                                        details[side])
            many[name] = side  # the last side of each server: `users` users
        rates = alternate(sides, rounds)
    finally:
        for proc in servers:
            stop(proc)
    details = {k: v[1:] for k, v in details.items()}  # the first of each is the untimed warm-up
    return {"many": many["demo"], "bare_many": many["bare Gradio app"], "predictions_per_second": rates,
            "details": details, "share_of_bare": ratios(rates[many["demo"]], rates[many["bare Gradio app"]])}


def report(lat: dict, cold: list[float], conc: dict, args: argparse.Namespace) -> tuple[dict, str]:
    end_to_end = lat[END_TO_END + ", ONNX Runtime"]["p50_ms"]["median"]
    cold_s = summary(cold)["median"]
    many = conc["many"]
    errors = sum(d["errors"] for k in (many, conc["bare_many"]) for d in conc["details"][k])
    share = summary(conc["share_of_bare"])["median"]
    cpu = {k: [d["server_cpu_ms_per_prediction"] for d in v] for k, v in conc["details"].items()}
    rss = [d["server_rss_mb_after"] for d in conc["details"][many]]
    growth = rss[-1] / rss[0] - 1
    lat_rows = [[k, fmt_range(v["p50_ms"]["runs"]), fmt_range(v["p90_ms"]["runs"])] for k, v in lat.items()]
    rate_rows = [[k, fmt_range(v), fmt_range(cpu[k], "{:.0f}")] for k, v in conc["predictions_per_second"].items()]
    markdown = "\n".join([
        f"`{command_line()}`: {args.threads} threads in-process, median of {args.rounds} alternating "
        f"runs (min, max); cold start {len(cold)} runs.",
        "",
        md_table(["in-process latency", "p50 (ms)", "p90 (ms)"], lat_rows),
        "",
        md_table(["over HTTP", "predictions/s", "server CPU per prediction (ms)"], rate_rows),
        "",
        md_table(["", "measured", "target", ""], [
            ["one image end to end (ONNX Runtime), p50", f"{end_to_end:.1f} ms", f"<= {TARGET_P50_MS:g} ms",
             met(end_to_end <= TARGET_P50_MS)],
            ["cold start to the first answer", fmt_range(cold) + " s", f"<= {TARGET_COLD_S:g} s",
             met(cold_s <= TARGET_COLD_S)],
            [f"demo / bare Gradio app, {args.users} users", fmt_ratio(conc["share_of_bare"]),
             f">= {TARGET_SHARE_OF_BARE:.0%}, 0 errors", met(share >= TARGET_SHARE_OF_BARE and errors == 0)],
            [f"errors, {args.users} users (demo + bare app)", str(errors), "0", met(errors == 0)],
            [f"demo server RSS after each round of {args.users} users", " -> ".join(f"{v:.0f}" for v in rss)
             + f" MB ({growth:+.1%} third vs first)", f"within {TARGET_RSS_GROWTH:.0%}",
             met(abs(growth) <= TARGET_RSS_GROWTH)],
        ]),
    ])
    results = {"latency": lat, "cold_start_seconds": summary(cold),
               "predictions_per_second": {k: summary(v) for k, v in conc["predictions_per_second"].items()},
               "load_details": conc["details"], "share_of_bare_app": summary(conc["share_of_bare"]),
               "demo_rss_mb_after_rounds": rss, "users": args.users, "requests_per_user": args.requests,
               "client_processes": args.client_processes,
               "targets": {"end_to_end_p50_ms": TARGET_P50_MS, "cold_start_s": TARGET_COLD_S,
                           "share_of_bare_app": TARGET_SHARE_OF_BARE, "rss_growth": TARGET_RSS_GROWTH}}
    return results, markdown


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--requests", type=int, default=20, help="per user")
    p.add_argument("--runs", type=int, default=100, help="timed calls per latency block")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cold-starts", type=int, default=3)
    p.add_argument("--client-processes", type=int, default=4, help="processes the users are spread over")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the in-process latency (ONNX Runtime "
                                                          "uses one per core)")
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

"""Where the demo server's CPU goes under load: `py-spy` samples `python app.py` while U users send requests.

Starts the demo, loads it with `--users` `gradio_client` users (spread over client processes)
for `--requests` requests each, records the server with `py-spy record --format raw` meanwhile,
and sorts the busy samples (threads waiting on a lock, a condition or the network are left
out) into the parts of a request: decoding and checking the upload, the model, the heatmap
overlay, Gradio's upload, pre- and post-processing, sockets, and the rest by leaf function.

    pip install py-spy   # a sampling profiler; it reads the server's memory, so it may need root
    python bench/profile_app.py [--users 32] [--requests 12]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from app_speed import free_port, start_app, stop, user_session
from common import add_out_argument, command_line, loadavg, md_table, write_results

# (part of a request, a substring of a frame in its stack), first match wins.
PARTS = [
    ("model (ONNX Runtime)", "Session.run"),
    ("model (PyTorch)", "_call_impl"),
    ("heatmap overlay", "overlay ("),
    ("decode, checks, resize (read_xray)", "read_xray ("),
    ("X-ray check distances", "distance ("),
    ("class activation map", "class_activation_map ("),
    ("Gradio: upload", "upload"),
    ("Gradio: preprocess", "preprocess"),
    ("Gradio: postprocess (heatmap JPEG, label)", "postprocess"),
    ("sockets", "_SelectorSocketTransport"),
]
# Leaf frames of threads that wait (for the network, a lock, a condition): not CPU work.
IDLE = (".select (", ".wait (", ".accept (", "block_thread (", "_read_from_self (", "sleep (", ".join (", ".acquire (")


def breakdown(raw: str) -> tuple[int, collections.Counter]:
    """Busy samples, and their count per part of a request, from py-spy's raw (collapsed stack) output."""
    parts: collections.Counter = collections.Counter()
    busy = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(i in frames[-1] for i in IDLE):
            continue
        busy += int(count)
        part = next((name for name, pattern in PARTS if any(pattern in f for f in frames)), None)
        parts[part or "other: " + frames[-1].split(" (")[0]] += int(count)
    return busy, parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=32)
    p.add_argument("--requests", type=int, default=12, help="per user")
    p.add_argument("--client-processes", type=int, default=4)
    add_out_argument(p, __file__)
    args = p.parse_args()
    if not shutil.which("py-spy"):
        raise SystemExit("py-spy is not installed: pip install py-spy")
    before = loadavg()
    port = free_port()
    proc, _ = start_app(port)
    out = Path(tempfile.mkdtemp(prefix="profile-app-")) / "raw.txt"
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--rate", "100", "--format", "raw",
                            "--nonblocking", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    processes = min(args.client_processes, args.users)
    shares = [args.users // processes + (i < args.users % processes) for i in range(processes)]
    firsts = [sum(shares[:i]) for i in range(processes)]
    try:
        with ProcessPoolExecutor(processes) as pool:
            errors = [e for found in pool.map(user_session, [f"http://127.0.0.1:{port}/"] * processes, firsts,
                                              shares, [args.requests] * processes) for e in found]
    finally:
        spy.send_signal(subprocess.signal.SIGINT)  # py-spy writes its file when interrupted
        spy.wait(timeout=60)
        stop(proc)
    busy, parts = breakdown(out.read_text())
    rows = [[name, f"{n / busy:.1%}"] for name, n in parts.most_common(15)]
    markdown = "\n".join([
        f"`{command_line()}`: {args.users} users x {args.requests} requests, {len(errors)} errors; "
        f"{busy} busy samples of the server at 100/s (waiting threads left out).",
        "",
        md_table(["part of the server's work", "share of busy samples"], rows),
    ])
    write_results(args.out, {"busy_samples": busy, "parts": dict(parts), "errors": errors[:5],
                             "requests": args.users * args.requests}, markdown, before)


if __name__ == "__main__":
    main()

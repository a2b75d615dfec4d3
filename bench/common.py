"""Shared helpers for the benchmarks in bench/: alternating timed runs, summaries, markdown and JSON output.

Every ratio in bench/ comes from `alternate`: each side is warmed up, then the sides run in
turn (A, B, A, B, ...), and a ratio is computed per round and summarised by its median,
min and max. Each script writes `bench/results/<script>.json` with the command, date, torch
threads, load averages before and after, all raw numbers and the markdown for the README.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gzip
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_out_argument(parser: argparse.ArgumentParser, script_file: str) -> None:
    """`--out`, defaulting to bench/results/<script name>.json."""
    default = RESULTS_DIR / f"{Path(script_file).stem}.json"
    parser.add_argument("--out", default=str(default), help="JSON results file (default: %(default)s)")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def alternate(sides: dict[str, Callable[[], float]], rounds: int, warmup: bool = True) -> dict[str, list[float]]:
    """Call each side once untimed (if `warmup`), then all sides in turn for `rounds` rounds.

    Each side returns its own measurement (a rate or a duration); returns the values per side, in round order.
    """
    if warmup:
        for name, fn in sides.items():
            print(f"  warm-up: {name}", flush=True)
            fn()
    values: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, fn in sides.items():
            values[name].append(fn())
            print(f"  round {r + 1}/{rounds}: {name}: {values[name][-1]:.4g}", flush=True)
    return values


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def summary(values: Sequence[float]) -> dict:
    """median, min, max and the raw values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-round ratios of two sides measured in the same rounds."""
    return [a / b for a, b in zip(numerator, denominator)]


def fmt_range(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    """'12.3 (min 11.0, max 13.1)' for the median, min and max of `values`."""
    s = summary(values)
    return f"{fmt.format(s['median'])} (min {fmt.format(s['min'])}, max {fmt.format(s['max'])})"


def fmt_ratio(values: Sequence[float]) -> str:
    """'1.64x (median of 3; min 1.51x, max 1.70x)'."""
    s = summary(values)
    return f"{s['median']:.2f}x (median of {len(values)}; min {s['min']:.2f}x, max {s['max']:.2f}x)"


def met(ok: bool) -> str:
    return "met" if ok else "not met"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


def _jsonable(o: object) -> object:
    """numpy scalars as numbers, anything else (paths) as text."""
    return o.item() if hasattr(o, "item") else str(o)


def write_results(out: str | Path, results: dict, markdown: str, loadavg_before: list[float]) -> None:
    """Write the JSON results file of one benchmark run and print its markdown."""
    record = {
        "command": command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_threads": torch_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
        "results": results,
        "markdown": markdown,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=_jsonable) + "\n")
    print(f"\n{markdown}\n\nwrote {out}")


def clean_test_rows(model_dir: Path, sources: Collection[str], split: str = "test") -> list[dict]:
    """A model's clean-test rows (or those of another `split`: "val", "train") of its `split_manifest.csv.gz`
    from `sources`, one per distinct image (copies share a hash)."""
    from fracture_detector.data import MANIFEST_NAME

    seen, rows = set(), []
    with gzip.open(Path(model_dir) / MANIFEST_NAME, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] in sources and row["split"] == split and row["sha256"] not in seen:
                seen.add(row["sha256"])
                rows.append(row)
    return rows


def rewrite_markdown(out: str | Path, markdown: Callable[[list[dict]], str]) -> None:
    """Re-render the tables of the runs recorded in `out` (`--table-only`: after a change to how they are
    shown), keeping every recorded number; trains and measures nothing."""
    out = Path(out)
    record = json.loads(out.read_text())
    record["markdown"] = markdown(record["results"]["runs"])
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(record["markdown"])

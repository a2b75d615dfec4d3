"""The demo's cold start on a fresh machine, and how fast `fracture-detector --help` answers.

A fresh Space, container or laptop has an empty home folder: no Matplotlib, Hugging Face or
export caches. Each round starts the app with a new, empty home folder (and no cache
variables) and with a home folder whose caches an earlier start filled (the baseline,
measured in the same run), alternating which goes first; with `--serving-python`, also with
the Python of a serving install (`pip install fracture-detector`, no PyTorch) and an empty
home. Time runs from `python app.py` until a `gradio_client` call of `/predict` on an example
X-ray answers (`bench/app_speed.py`'s `start_app`). The bundled model ships its `model.onnx`,
so no start exports anything. `--help` is timed with each Python, `--help-runs` times each.

    python -m venv /tmp/serving && /tmp/serving/bin/pip install dist/fracture_detector-*.whl -c requirements.txt
    python bench/cold_start.py [--rounds 3] [--serving-python /tmp/serving/bin/python]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app_speed import ROOT, free_port, start_app, stop
from common import add_out_argument, fmt_range, loadavg, md_table, met, summary, write_results

TARGET_S = 8.0  # issue 21: first answer within 8 s with an empty cache
TARGET_SERVING_S = 4.0  # issue 22: the same with the serving install
TARGET_HELP_S = 1.0  # issue 22: `fracture-detector --help`
CACHE_VARIABLES = ("XDG_CACHE_HOME", "FRACTURE_DETECTOR_CACHE", "HF_HOME", "MPLCONFIGDIR", "XDG_CONFIG_HOME")


def environment(home: Path) -> dict:
    """This process's environment with `home` as the home folder and no variable that points at a cache."""
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
    return {**env, "HOME": str(home)}


def first_answer(home: Path, python: str = sys.executable) -> float:
    proc, seconds = start_app(free_port(), env=environment(home), python=python)
    stop(proc)
    return seconds


def help_seconds(python: str) -> float:
    """`python -m fracture_detector --help` (what the `fracture-detector` script runs), wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "fracture_detector", "--help"], env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def gradio_import_seconds(python: str) -> float:
    """`python -c "import gradio"`, wall seconds: the part of a start this project does not control."""
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "import gradio"], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serving-python", help="the Python of a serving install (no PyTorch)")
    p.add_argument("--help-runs", type=int, default=5)
    add_out_argument(p, __file__)
    args = p.parse_args()
    if args.serving_python:
        check = subprocess.run([args.serving_python, "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                               capture_output=True, text=True, check=True)
        if check.stdout.strip() != "None":
            sys.exit(f"{args.serving_python} has PyTorch: not a serving install")
    before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    warm_home = work / "warm"
    warm_home.mkdir()
    first_answer(warm_home)  # fills the warm home's caches (not counted)
    pythons = {"empty": sys.executable, "warm": sys.executable}
    if args.serving_python:
        pythons["serving, empty"] = args.serving_python
    times: dict[str, list[float]] = {side: [] for side in pythons}
    for k in range(args.rounds):
        for side in (list(pythons) if k % 2 == 0 else list(pythons)[::-1]):
            home = warm_home
            if side != "warm":
                home = work / f"{side.replace(', ', '-')}{k}"
                home.mkdir()
            times[side].append(first_answer(home, pythons[side]))
            print(f"round {k + 1}: {side} {times[side][-1]:.1f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    helps = {"full install": [help_seconds(sys.executable) for _ in range(args.help_runs)]}
    gradio = {"full install": [gradio_import_seconds(sys.executable) for _ in range(args.help_runs)]}
    if args.serving_python:
        helps["serving install"] = [help_seconds(args.serving_python) for _ in range(args.help_runs)]
        gradio["serving install"] = [gradio_import_seconds(args.serving_python) for _ in range(args.help_runs)]
    rows = [["full install, empty home (a fresh machine: no caches)", fmt_range(times["empty"]) + " s",
             f"<= {TARGET_S:g} s", met(summary(times["empty"])["median"] <= TARGET_S)]]
    if args.serving_python:
        serving = summary(times["serving, empty"])["median"]
        rows.append(["serving install (no PyTorch), empty home", fmt_range(times["serving, empty"]) + " s",
                     f"<= {TARGET_SERVING_S:g} s", met(serving <= TARGET_SERVING_S)])
    rows.append(["full install, caches filled by an earlier start (baseline)", fmt_range(times["warm"]) + " s", "", ""])
    help_rows = [[f"`fracture-detector --help`, {name}", fmt_range(v) + " s", f"< {TARGET_HELP_S:g} s",
                  met(summary(v)["median"] < TARGET_HELP_S)] for name, v in helps.items()]
    help_rows += [[f"`import gradio` alone, {name} (part of every start)", fmt_range(v) + " s", "", ""]
                  for name, v in gradio.items()]
    markdown = (f"`python bench/cold_start.py --rounds {args.rounds}"
                + (" --serving-python ..." if args.serving_python else "")
                + f"`: from `python app.py` to the first `/predict` answer, median (min, max) of {args.rounds} "
                f"starts each, alternating; `--help` and `import gradio` {args.help_runs} runs each.\n\n"
                + md_table(["start", "first answer", "target", "met"], rows + help_rows))
    write_results(args.out, {"seconds": {side: summary(v) for side, v in times.items()}, "raw": times,
                             "help_seconds": {k: summary(v) for k, v in helps.items()},
                             "gradio_import_seconds": {k: summary(v) for k, v in gradio.items()},
                             "targets_s": {"empty": TARGET_S, "serving, empty": TARGET_SERVING_S,
                                           "help": TARGET_HELP_S}}, markdown, before)


if __name__ == "__main__":
    main()

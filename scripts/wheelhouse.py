"""Download the wheels the image's `build` stage installs, for a build that reaches no package index.

    python scripts/wheelhouse.py wheelhouse [--train]

The serving install's dependencies (with `--train`, the `train` extra's too: only to build the
full-install image that bench/container.py compares with), at requirements.txt's versions,
and what pip needs to build the package (setuptools), as wheels for the Python that runs this
script: run it with a CPython 3.11 on Linux, as the image has. Files already there are kept.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--train"]):
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"], "wheel"]
    if "--train" in sys.argv:
        wanted += pyproject["project"]["optional-dependencies"]["train"]
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"run this with Python 3.11, the image's; this is {sys.version.split()[0]}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(out), "--only-binary", ":all:",
                    "-c", str(ROOT / "requirements.txt"), *wanted], check=True)
    print(f"{len(list(out.glob('*.whl')))} wheels in {out}")


if __name__ == "__main__":
    main()

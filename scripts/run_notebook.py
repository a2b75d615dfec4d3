"""Execute notebooks/fracture_detector.ipynb top to bottom and save it with its outputs, minus noisy metadata.

Execution counts and per-cell timings are dropped, so a re-run that changes nothing leaves a small
diff; `tests/test_notebook.py` checks that the saved outputs come from the bundled model.

    python scripts/run_notebook.py   # needs the real data in ../shared/datasets (or $FRACTURE_DETECTOR_DATA)
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "fracture_detector.ipynb"
# The README's picture of the notebook: the first figure of the cell that draws these curves.
README_FIGURE = NOTEBOOK.parent / "clean_test_curves.png"
FIGURE_CELL = "precision_recall_curve"


def figure(notebook) -> bytes:
    """The PNG bytes of the README's figure in the notebook's outputs."""
    cell = next(c for c in notebook.cells if c.cell_type == "code" and FIGURE_CELL in c.source)
    return base64.b64decode(next(o.data["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})))


def strip(notebook) -> None:
    """Drop execution counts, timings and kernel-specific metadata in place."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.execution_count = None
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = None
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python"}}


def main() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    strip(notebook)
    nbformat.write(notebook, NOTEBOOK)
    README_FIGURE.write_bytes(figure(notebook))
    print(f"wrote {NOTEBOOK} and {README_FIGURE}")


if __name__ == "__main__":
    main()

"""The research notebook: its committed outputs were made by this commit's bundled model, it runs top to
bottom on the real data, and without the data it stops at its first cell with one message."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

import nbformat
import pytest
from conftest import ROOT, SHARED_DATA

from fracture_detector.resources import BUNDLED_MODEL

sys.path.insert(0, str(ROOT / "scripts"))
from run_notebook import README_FIGURE, figure  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "fracture_detector.ipynb"
LEAK_LINE = re.compile(r"^(\S+): shipped test ROC-AUC ([\d.]+) \((\d+) files\), clean test ROC-AUC ([\d.]+) "
                       r"\((\d+) X-rays\)$", re.M)


def outputs_text(notebook) -> str:
    """Everything the code cells printed."""
    return "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                     if o.output_type == "stream")


def leak_numbers(text: str) -> dict[str, tuple[float, int, float, int]]:
    return {m[1]: (float(m[2]), int(m[3]), float(m[4]), int(m[5])) for m in LEAK_LINE.finditer(text)}


def expected_leak_numbers() -> dict[str, tuple[float, int, float, int]]:
    """`metrics.json`'s shipped and clean test ROC-AUC per source, as the notebook prints them."""
    metrics = json.loads((BUNDLED_MODEL / "metrics.json").read_text())
    return {name: (round(r["shipped_test"]["roc_auc"], 4), r["shipped_test"]["images"],
                   round(r["clean_test"]["roc_auc"], 4), r["clean_test"]["images"])
            for name, r in metrics["by_source"].items()}


def test_committed_outputs_come_from_this_bundled_model():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    text = outputs_text(notebook)
    digest = hashlib.sha256((BUNDLED_MODEL / "model.safetensors").read_bytes()).hexdigest()
    assert f"weights sha256: {digest}" in text, "the notebook's outputs were made by another model: re-run it"
    assert leak_numbers(text) == expected_leak_numbers()
    assert any(o.output_type == "display_data" and "image/png" in o.data for c in notebook.cells
               if c.cell_type == "code" for o in c.outputs), "no figures"
    assert README_FIGURE.read_bytes() == figure(notebook)  # the README shows this run's figure
    # Noisy metadata stripped, so diffs show content only.
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is None and "execution" not in cell.metadata
            assert all(o.get("execution_count") is None for o in cell.outputs)


def _execute(notebook, env: dict) -> None:
    """Run `notebook` in place from the notebooks folder, the kernel with `env` added to this environment."""
    from nbclient import NotebookClient

    for cell in notebook.cells:  # from a clean slate: nothing left over from the committed run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real data not present at ../shared")
def test_notebook_runs_top_to_bottom_on_the_real_data():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    _execute(notebook, {"PYTHONPATH": str(ROOT / "src")})  # raises CellExecutionError on any error
    assert leak_numbers(outputs_text(notebook)) == expected_leak_numbers()


def test_notebook_without_the_data_stops_cleanly_at_its_first_cell(tmp_path):
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.raises(CellExecutionError) as stopped:
        _execute(notebook, {"FRACTURE_DETECTOR_DATA": str(tmp_path / "nothing"), "PYTHONPATH": str(ROOT / "src")})
    assert stopped.value.ename == "StopExecution"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    printed = [o for o in code[0].outputs if o.output_type == "stream"]
    errors = [o for o in code[0].outputs if o.output_type == "error"]
    assert "The real data is not here" in printed[0].text and "it stops here" in printed[0].text
    assert errors and errors[0].traceback == []  # the message only, no traceback
    assert all(not c.outputs for c in code[1:])  # nothing after it ran

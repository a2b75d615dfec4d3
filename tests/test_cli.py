"""`fracture-detector predict`: records, exit status, JSON/CSV, DICOM, heatmaps, same numbers as the API."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import ROOT
from corpus import make_dicom, real_xray, xray12
from PIL import Image, ImageDraw


def predict_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fracture_detector", "predict", "--quiet", *args]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder with three X-rays (PNG, JPEG in a subfolder, DICOM), an unreadable file, a colour
    photo, and a text file the folder walk must skip."""
    folder = tmp_path_factory.mktemp("cli") / "in"
    (folder / "sub").mkdir(parents=True)
    real_xray("fractured_roboflow_1.jpg").save(folder / "a.png")
    real_xray("not_fractured_fracatlas_1.jpg").save(folder / "sub" / "b.jpg", quality=92)
    make_dicom(folder / "c.dcm", xray12("fractured_kaggle_2.jpg"))
    (folder / "broken.png").write_bytes(b"not an image at all")
    Image.new("RGB", (120, 90), (200, 40, 40)).save(folder / "red.png")
    document = Image.new("L", (300, 400), 255)
    for y in range(20, 380, 14):
        ImageDraw.Draw(document).text((20, y), "Patient report: no acute findings. " * 2, fill=0)
    document.save(folder / "report.png")  # not colour, not blank: the learned check must turn it away
    (folder / "notes.txt").write_text("not an input")
    return folder


def test_predict_folder_records_exit_status_json_csv_heatmaps(inputs, tmp_path):
    out_json, out_csv, heatmaps = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "heat"
    missing = tmp_path / "missing.png"
    cmd = predict_cmd(str(inputs), str(missing), "--json", str(out_json), "--csv", str(out_csv),
                      "--heatmaps", str(heatmaps))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # some files failed
    records = {r["path"]: r for r in json.loads(out_json.read_text())}
    expected = {str(inputs / n) for n in ("a.png", "broken.png", "c.dcm", "red.png", "report.png", "sub/b.jpg")}
    expected |= {str(missing)}
    assert set(records) == expected  # notes.txt skipped; the missing file named
    assert list(records)[-1] == str(missing)  # input order: the folder's files (sorted), then the next argument

    good = [records[str(inputs / n)] for n in ("a.png", "sub/b.jpg", "c.dcm")]
    for r in good:
        assert set(r) == {"path", "probabilities", "decision", "xray_check", "distance", "inverted", "warning", "error",
                          "heatmap"}
        assert r["error"] is None and set(r["probabilities"]) == {"fractured", "not fractured"}
        assert r["xray_check"] in ("X-ray", "X-ray unlike the training data") and r["distance"] > 0
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["decision"] in ("fracture suspected", "no fracture detected")
        heat = Image.open(r["heatmap"])
        assert heat.mode == "RGB" and max(heat.size) >= 160
    assert len(list(heatmaps.iterdir())) == 3
    failures = {
        str(inputs / "broken.png"): "not a readable image",
        str(inputs / "red.png"): "does not look like an X-ray",
        str(missing): "file not found",
        str(inputs / "report.png"): "this does not look like an X-ray (its features are far from those of every X-ray",
    }
    for path, reason in failures.items():
        assert records[path]["probabilities"] is None and reason in records[path]["error"]
        assert f"failed: {path}: " in proc.stderr
    report = records[str(inputs / "report.png")]
    assert report["xray_check"] == "not an X-ray" and report["decision"] == "not an X-ray" and not report["heatmap"]
    assert "3 classified, 4 failed" in proc.stderr
    assert "fracture suspected" in proc.stdout or "no fracture detected" in proc.stdout  # the table

    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["path", "p_fractured", "p_not_fractured", "decision", "xray_check", "distance", "inverted",
                             "error", "heatmap"]
    assert [row["path"] for row in rows] == list(records)
    for row in rows:
        record = records[row["path"]]
        assert row["xray_check"] == (record["xray_check"] or "")
        if record["probabilities"]:
            assert abs(float(row["p_fractured"]) - record["probabilities"]["fractured"]) < 1e-6
        else:
            assert row["p_fractured"] == "" and row["error"] == record["error"]

    # The package API gives the same probabilities for the same files.
    from fracture_detector.predict import Predictor

    predictor = Predictor()
    for r in good:
        api = predictor.predict(r["path"]).probabilities
        assert all(abs(api[k] - r["probabilities"][k]) < 1e-5 for k in api)


def test_predict_all_good_exits_zero_and_bad_model_is_one_line(inputs, tmp_path):
    ok = subprocess.run(predict_cmd(str(inputs / "a.png"), str(inputs / "c.dcm")), capture_output=True, text=True,
                        cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "2 classified, 0 failed" in ok.stderr

    bad = subprocess.run(predict_cmd(str(inputs / "a.png"), "--model", str(tmp_path)), capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert bad.returncode != 0 and "not a saved model folder" in bad.stderr and "Traceback" not in bad.stderr

    nowhere = subprocess.run(predict_cmd(str(inputs), "--json", str(tmp_path / "no" / "r.json")), capture_output=True,
                             text=True, cwd=ROOT, timeout=300)
    assert nowhere.returncode != 0 and "its folder does not exist" in nowhere.stderr


def test_model_without_calibration_is_refused_clearly(inputs, tmp_path):
    """A model folder without temperature/threshold is refused with one sentence, not scored at 1.0 / 0.5."""
    import shutil

    from fracture_detector.calibration import CalibrationError
    from fracture_detector.predict import Predictor
    from fracture_detector.resources import BUNDLED_MODEL

    folder = tmp_path / "uncalibrated"
    shutil.copytree(BUNDLED_MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["threshold"], config["temperature"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CalibrationError, match="has no temperature, threshold"):
        Predictor(folder)
    proc = subprocess.run(predict_cmd(str(inputs / "a.png"), "--model", str(folder)), capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {folder}/config.json has no temperature")


def test_no_xray_check_gives_probabilities_but_still_says_what_it_found(inputs, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(predict_cmd(str(inputs / "report.png"), str(inputs / "a.png"), "--no-xray-check",
                                      "--json", str(out)), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, xray = json.loads(out.read_text())
    assert report["probabilities"] and report["xray_check"] == "not an X-ray" and not report["error"]
    assert xray["xray_check"] in ("X-ray", "X-ray unlike the training data")


def test_model_folder_without_xray_statistics_still_serves(inputs, tmp_path):
    """An older or foreign model folder has no xray_check.safetensors: cheap checks only, said per record."""
    import shutil

    from fracture_detector.resources import BUNDLED_MODEL

    folder = tmp_path / "no_stats"
    shutil.copytree(BUNDLED_MODEL, folder)
    (folder / "xray_check.safetensors").unlink()
    out = tmp_path / "r.json"
    proc = subprocess.run(predict_cmd(str(inputs / "a.png"), str(inputs / "report.png"), str(inputs / "red.png"),
                                      "--model", str(folder), "--json", str(out)),
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    records = json.loads(out.read_text())
    xray, report, red = records
    assert xray["probabilities"] and xray["xray_check"] == "not checked" and xray["distance"] is None
    assert report["probabilities"] and report["xray_check"] == "not checked"  # nothing learned to refuse it
    assert red["probabilities"] is None and "it is a colour image" in red["error"]  # the cheap check still runs
    assert proc.returncode == 1 and "2 classified, 1 failed" in proc.stderr


@pytest.mark.parametrize("option,value,expected", [
    ("--batch-size", "0", "argument --batch-size: must be at least 1, got 0"),
    ("--workers", "-2", "argument --workers: must be at least 1, got -2"),
    ("--workers", "two", "argument --workers: expected a whole number, got 'two'"),
])
def test_bad_arguments_get_one_line(inputs, option, value, expected):
    proc = subprocess.run(predict_cmd(str(inputs), option, value), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_help_and_the_errors_module_load_no_torch():
    code = ("import sys, contextlib, io\n"
            "import fracture_detector.errors\n"
            "from fracture_detector import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    cli.main(['--help'])\n"
            "print(sorted(m for m in ('torch', 'timm', 'onnxruntime', 'gradio') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_any_exception_reading_one_file_is_that_files_error(monkeypatch):
    from fracture_detector import predict
    from fracture_detector.resources import example_xrays

    files = example_xrays()[:4]
    read_xray = predict.read_xray

    def flaky(source, *args, **kwargs):  # a decoder bug on one file, of a type no decoder is expected to raise
        if source == files[1]:
            raise RuntimeError("decoder bug")
        return read_xray(source, *args, **kwargs)

    monkeypatch.setattr(predict, "read_xray", flaky)
    results = list(predict.Predictor(backend="torch").predict_files(files, batch_size=2, workers=2))
    assert [r.source for r in results] == files
    assert results[1].error == "could not be read (RuntimeError: decoder bug)" and results[1].prediction is None
    assert all(r.error is None and r.prediction.probabilities for k, r in enumerate(results) if k != 1)

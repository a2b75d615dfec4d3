"""Command line (`fracture-detector`, also `python -m fracture_detector`).

    fracture-detector predict PATH... [--model M] [--json FILE] [--csv FILE] [--heatmaps DIR] [--backend B]
    fracture-detector calibrate FOLDER --output-dir DIR [--model M] [--target-sensitivity S]
    fracture-detector export MODEL_DIR [--output FILE]
    fracture-detector push FOLDER ORG/NAME [--private] [--revision BRANCH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from tqdm import tqdm

# Only light modules here (no PyTorch): `--help` and argument errors answer at once. Each command imports
# what its work needs where it starts.
from .decode import DICOM_SUFFIXES
from .errors import HubError, ModelError
from .resources import BACKENDS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", *DICOM_SUFFIXES)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def unit_interval(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given; folders walked recursively for image and DICOM files (sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)  # a missing file is reported as a failed record
    return files


def heatmap_path(out_dir: Path, source: Path, taken: set[str]) -> Path:
    """`<stem>_heatmap.png` in `out_dir`, numbered when two inputs share a stem."""
    name, n = f"{source.stem}_heatmap.png", 1
    while name in taken:
        n += 1
        name = f"{source.stem}_{n}_heatmap.png"
    taken.add(name)
    return out_dir / name


def run_predict(args: argparse.Namespace) -> int:
    """Classify every input, write the table / JSON / CSV / heatmaps; 1 if any file failed."""
    from .heatmap import overlay
    from .loading import resolve_model
    from .predict import Predictor

    for out in (args.json, args.csv):  # fail before the work, not after it
        if out and not Path(out).resolve().parent.is_dir():
            sys.exit(f"error: cannot write {out}: its folder does not exist")
    try:
        model_dir = resolve_model(args.model)
        predictor = Predictor(model_dir, args.backend)
    except (HubError, ModelError) as e:
        sys.exit(f"error: {e}")
    files = expand_inputs(args.paths)
    if not files:
        sys.exit("error: no image or DICOM files found in " + ", ".join(args.paths))
    if args.heatmaps:
        Path(args.heatmaps).mkdir(parents=True, exist_ok=True)
    records, taken = [], set()
    results = predictor.predict_files(files, args.batch_size, args.workers, check=not args.no_xray_check,
                                      heatmaps=bool(args.heatmaps))
    for r in tqdm(results, total=len(files), unit="file", disable=args.quiet):
        record = {"path": str(r.source), "probabilities": None, "decision": None, "xray_check": None,
                  "distance": None, "inverted": None, "warning": None, "error": r.error, "heatmap": None}
        if r.prediction:
            p = r.prediction
            record.update(probabilities=p.probabilities, decision=p.decision, xray_check=p.check,
                          distance=p.distance, inverted=p.inverted, warning=p.warning)
        if r.heatmap is not None:
            out = heatmap_path(Path(args.heatmaps), Path(r.source), taken)
            overlay(r.xray.image, r.heatmap).save(out)
            record["heatmap"] = str(out)
        records.append(record)

    print_table(records, predictor.label_names[predictor.positive], predictor.threshold)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    if args.csv:
        write_csv(Path(args.csv), records, predictor.label_names)
    failed = [r for r in records if r["error"]]
    for r in failed:
        print(f"failed: {r['path']}: {r['error']}", file=sys.stderr)
    print(f"{len(records) - len(failed)} classified, {len(failed)} failed (model: {model_dir}, run by "
          f"{predictor.backend})", file=sys.stderr)
    return 1 if failed else 0


def print_table(records: list[dict], positive: str, threshold: float) -> None:
    from .xray_check import UNFAMILIAR  # here, not at the top: `--help` needs neither NumPy nor Pillow

    width = min(max([len(r["path"]) for r in records] + [4]), 70)
    print(f"{'path':<{width}}  {'P(' + positive + ')':>14}  decision (threshold {threshold:.3f})")
    for r in records:
        path = r["path"] if len(r["path"]) <= width else "..." + r["path"][-width + 3 :]
        if r["error"]:
            print(f"{path:<{width}}  {'-':>14}  error: {r['error']}")
        else:
            unlike = "  (X-ray unlike the training data: less reliable)" if r["xray_check"] == UNFAMILIAR else ""
            print(f"{path:<{width}}  {r['probabilities'][positive]:>14.4f}  {r['decision']}{unlike}")


def write_csv(out: Path, records: list[dict], label_names: list[str]) -> None:
    columns = ["path", *(f"p_{name.replace(' ', '_')}" for name in label_names), "decision", "xray_check",
               "distance", "inverted", "error", "heatmap"]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in records:
            probs = [f"{r['probabilities'][n]:.6f}" if r["probabilities"] else "" for n in label_names]
            distance = "" if r["distance"] is None else f"{r['distance']:.4f}"
            inverted = "" if r["inverted"] is None else str(r["inverted"]).lower()
            writer.writerow([r["path"], *probs, r["decision"] or "", r["xray_check"] or "", distance, inverted,
                             r["error"] or "", r["heatmap"] or ""])


def run_calibrate(args: argparse.Namespace) -> int:
    """Choose the threshold on a site's labelled X-rays (FOLDER/<label>/...) and write the model copy."""
    from .calibration import DEFAULT_TARGET_SENSITIVITY
    from .loading import resolve_model
    from .predict import Predictor
    from .site import site_threshold, write_site_model

    if Path(args.output_dir).exists():  # fail before the work, not after it
        sys.exit(f"error: {args.output_dir} already exists: choose a new folder")
    try:
        model_dir = resolve_model(args.model)
        predictor = Predictor(model_dir)
    except (HubError, ModelError) as e:
        sys.exit(f"error: {e}")
    files, labels = [], []
    for label in predictor.label_names:
        found = expand_inputs([str(Path(args.folder) / label)]) if (Path(args.folder) / label).is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        sys.exit(f"error: no X-rays in {args.folder}: expected a folder per label, "
                 + ", ".join(repr(n) for n in predictor.label_names))
    target = args.target_sensitivity or predictor.calibration.target_sensitivity or DEFAULT_TARGET_SENSITIVITY
    print(f"scoring {len(files)} X-rays of {args.folder} ...", file=sys.stderr)
    try:
        record = site_threshold(predictor, files, labels, target, workers=args.workers)
        out = write_site_model(model_dir, args.output_dir, record)
    except (ValueError, ModelError) as e:
        sys.exit(f"error: {e}")
    for key, title in (("at_shipped_threshold", f"shipped threshold {record['shipped_threshold']:.4f}"),
                       ("at_site_threshold", f"site threshold {record['threshold']:.4f}")):
        r = record[key]
        print(f"{title}: sensitivity {r['sensitivity']:.3f}, specificity {r['specificity']:.3f} "
              f"on these {record['images']} X-rays ({record['fractured']} fractured)")
    print(f"wrote {out} (use it with --model {out})")
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="fracture-detector", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    pred = sub.add_parser("predict", help="classify X-ray files and folders (PNG, JPEG, ..., DICOM)")
    pred.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    pred.add_argument("--model", help="hf-hub:ORG/NAME[@REV] or a model folder (default: the bundled model)")
    pred.add_argument("--json", metavar="FILE", help="write one record per input as a JSON list")
    pred.add_argument("--csv", metavar="FILE", help="write one row per input as CSV")
    pred.add_argument("--heatmaps", metavar="DIR", help="write a heatmap overlay per classified file")
    pred.add_argument("--batch-size", type=positive_int, default=64, help="images per model call")
    pred.add_argument("--workers", type=positive_int, default=4, help="threads decoding images")
    pred.add_argument("--no-xray-check", action="store_true",
                      help="give probabilities even for images that do not look like X-rays (the xray_check "
                           "column still says what it found)")
    pred.add_argument("--backend", choices=BACKENDS, default="auto",
                      help="what runs the model (auto: ONNX Runtime where the folder has model.onnx, as the "
                           "bundled model does; else PyTorch)")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")

    cal = sub.add_parser("calibrate", help="re-choose the threshold on a site's own labelled X-rays and write "
                                           "a copy of the model with it")
    cal.add_argument("folder", metavar="FOLDER", help="the site's X-rays, a folder per label (e.g. 'fractured', "
                                                      "'not fractured'), searched recursively")
    cal.add_argument("--output-dir", required=True, help="the new model folder (must not exist)")
    cal.add_argument("--model", help="hf-hub:ORG/NAME[@REV] or a model folder (default: the bundled model)")
    cal.add_argument("--target-sensitivity", type=unit_interval,
                     help="sensitivity to reach on these X-rays (default: what the model's threshold was chosen for)")
    cal.add_argument("--workers", type=positive_int, default=4, help="threads decoding images")

    export_p = sub.add_parser("export", help="write model.onnx for ONNX Runtime next to a saved model's weights")
    export_p.add_argument("model_dir", metavar="MODEL_DIR")
    export_p.add_argument("--output", metavar="FILE", help="where to write it (default: MODEL_DIR/model.onnx)")

    push_p = sub.add_parser("push", help="upload a saved model folder to a Hub (token from HF_TOKEN)")
    push_p.add_argument("folder")
    push_p.add_argument("repo_id", metavar="ORG/NAME")
    push_p.add_argument("--private", action="store_true")
    push_p.add_argument("--revision", help="branch to push to (created if missing)")

    args = p.parse_args(argv)
    if args.command == "predict":
        sys.exit(run_predict(args))
    if args.command == "calibrate":
        sys.exit(run_calibrate(args))
    if args.command == "export":
        from .runtime import FULL_INSTALL, torch_installed

        if not torch_installed():
            sys.exit(f"error: exporting needs PyTorch's ONNX exporter, which this install lacks: {FULL_INSTALL}")
        from .export import export

        try:
            print(f"wrote {export(args.model_dir, args.output)}")
        except ModelError as e:
            sys.exit(f"error: {e}")
        return
    from .hub import push

    try:
        url = push(args.folder, args.repo_id, private=args.private, revision=args.revision)
    except (HubError, ModelError) as e:
        sys.exit(f"error: {e}")
    print(f"pushed {args.folder} to {url}")


if __name__ == "__main__":
    main()

"""The Gradio demo: upload an X-ray (image or DICOM), get calibrated probabilities, the
decision at the model's threshold and a heatmap (`heatmap`). `python app.py` serves it.

Requests are batched (`batch=True`): while the model runs, new uploads queue, and the next
call takes up to `MAX_BATCH` of them at once, so throughput grows with concurrent users.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
from pathlib import Path

import gradio as gr

from .heatmap import overlay
from .predict import Prediction, Predictor
from .resources import BUNDLED_MODEL, example_xrays

MAX_BATCH = 32
MAX_UPLOAD = "20mb"
FILE_TYPES = ["image", ".dcm", ".dicom", ".tif", ".tiff"]
NOTICE = "**Research demo, not a medical device.** Do not use it to diagnose anyone or to make any clinical decision."


def _scores(r: dict) -> str:
    lo, hi = r.get("roc_auc_ci95", [float("nan")] * 2)
    return (f"ROC-AUC {r['roc_auc']:.3f} (95% CI {lo:.2f}-{hi:.2f}); at the threshold, "
            f"sensitivity {r['sensitivity']:.2f} and specificity {r['specificity']:.2f}")


def refusal(finding: str) -> str:
    """The one message for an image the X-ray check turned away, whichever stage of it did."""
    return f"**This does not look like an X-ray** ({finding}), so no fracture probability is given."


def headline(model_dir: Path) -> str:
    """The model's clean-test results from its `metrics.json` (if it has one): per source where it has several."""
    try:
        metrics = json.loads((model_dir / "metrics.json").read_text())
        pooled = metrics["results"]["clean_test"]
        by_source = {name: r["clean_test"] for name, r in metrics.get("by_source", {}).items()}
    except (OSError, KeyError, ValueError):
        return "No evaluation results ship with this model."
    if len(by_source) < 2:
        return (f"On {pooled['images']} held-out images ({pooled['groups']} distinct X-rays, no copies of "
                f"training images): {_scores(pooled)}.")
    # Pooled numbers would hide a weak source behind a large one: one line each.
    return "On held-out X-rays (no copies of training images) of each source: " + "; ".join(
        f"**{name}** ({r['groups']} distinct X-rays): {_scores(r)}" for name, r in by_source.items()) + "."


def decision_label(**kwargs) -> gr.Label:
    """A `gr.Label` whose headline is the decision at the model's threshold, above both probabilities.

    A plain `gr.Label` heads with the most probable class: with a threshold of 0.21, an
    X-ray at P(fractured) = 0.35 read "not fractured" in large type above "fracture
    suspected". This one takes `(decision, probabilities)` and keeps the Label's look and
    API shape: `{"label": decision, "confidences": [...]}`. (Its postprocessing is set on
    the instance: Gradio writes a `.pyi` stub beside any module that subclasses a component.)
    """
    label = gr.Label(**kwargs)
    plain = label.postprocess

    def postprocess(value):
        if isinstance(value, tuple):
            decision, probabilities = value
            data = plain(probabilities)
            data.label = decision
            return data
        return plain(value)

    label.postprocess = postprocess
    return label


def build_demo(model_dir: str | Path = BUNDLED_MODEL, source: str | None = None, backend: str = "auto") -> gr.Blocks:
    """The demo around one `Predictor`; `source` says where the model came from (shown on the page)."""
    predictor = Predictor(model_dir, backend)
    positive = predictor.label_names[predictor.positive]

    def classify(paths: list[str | None]) -> tuple[list, list, list]:
        """Batched: the CLI's batch path (`Predictor.predict_files`) over every upload in the batch, with heatmaps
        from the same model call.

        Nothing raises: with `batch=True` an exception would fail every request in the batch,
        so a bad file gets its message in its own row.
        """
        results = iter(predictor.predict_files([p for p in paths if p], batch_size=MAX_BATCH, heatmaps=True))
        outputs = []  # (heatmap, probabilities, decision text) per upload
        for path in paths:
            r = next(results) if path else None
            if r is None:
                outputs.append((None, None, "Upload an X-ray image first."))
            elif r.refused:
                outputs.append((None, None, refusal(r.refused)))
            elif r.error:
                outputs.append((None, None, f"**Could not read this file**: {r.error}"))
            else:
                outputs.append((overlay(r.xray.image, r.heatmap), (r.prediction.decision, r.prediction.probabilities),
                                decision_text(r.prediction)))
        images, labels, decisions = (list(column) for column in zip(*outputs))
        return images, labels, decisions

    def decision_text(prediction: Prediction) -> str:
        """The decision in words: the probability, the threshold and what it was chosen for, any warning."""
        text = (f"**{prediction.decision.capitalize()}**: P({positive}) = {prediction.probabilities[positive]:.3f}; "
                f"flagged when it reaches the {predictor.calibration.describe_threshold()}.")
        if prediction.warning:
            text += f"\n\n**Warning**: {prediction.warning}"
        return text

    arch = predictor.config.get("architecture", "?")
    with gr.Blocks(title="Fracture Detector", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# Fracture Detector\n{NOTICE}\n\n"
            f"Model: `{arch}` - {source or predictor.model_dir}. {headline(predictor.model_dir)}"
        )
        with gr.Row():
            with gr.Column():
                # A file, not gr.Image: the upload reaches our decoder untouched (DICOM, 16-bit,
                # broken files), so every file gets our handling and our message.
                upload = gr.File(label="X-ray: PNG, JPEG, GIF, BMP, TIFF, 16-bit or DICOM (.dcm)",
                                 file_types=FILE_TYPES, type="filepath")
                button = gr.Button("Classify", variant="primary")
                examples = [str(p) for p in example_xrays()]
                if examples:
                    gr.Examples(examples, inputs=upload, label="Example X-rays from each training source (their "
                                                               "licences: see examples/README.md)")
            with gr.Column():
                label = decision_label(num_top_classes=2, label="Decision at the threshold; calibrated probabilities",
                                       elem_id="probabilities")
                decision = gr.Markdown(elem_id="decision")
                heatmap = gr.Image(label="Heatmap: where the model sees evidence of a fracture", type="pil",
                                   format="jpeg", interactive=False, elem_id="heatmap")
        gr.Markdown("Heatmaps show what drove the score, not where a fracture is; they can point at "
                    "labels, borders or implants. Images that do not look like X-rays are refused, and X-rays "
                    "unlike the training data get a warning.")
        button.click(classify, inputs=upload, outputs=[heatmap, label, decision], api_name="predict",
                     batch=True, max_batch_size=MAX_BATCH, concurrency_limit=1)
    demo.queue(max_size=512)
    return demo


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (as `MALLOC_ARENA_MAX` would); True if it could (Linux with glibc).

    Each thread that allocates gets an arena of its own, and freed memory stays in it: under
    many concurrent uploads (Gradio's worker threads decoding images) the server's resident
    memory grew with every round of load. With two arenas it levels off (bench/app_speed.py
    records it after each round). Call it before the server starts its threads.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to cap
        return False
    m_arena_max = -8  # from glibc's malloc.h
    return bool(libc.mallopt(m_arena_max, arenas))


def start(demo: gr.Blocks, host: str, port: int, share: bool = False) -> None:
    """Start serving `demo` in the background; if `share` cannot get a public link, say so in one sentence."""
    # Gradio prints a multi-paragraph download recipe when the share tunnel fails; we say it in one line.
    with contextlib.redirect_stdout(io.StringIO()):
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD,
                    prevent_thread_lock=True, quiet=True, show_error=True)
    print(f"Serving the demo at {demo.local_url}", flush=True)
    if share and demo.share_url:
        print(f"Public link: {demo.share_url}", flush=True)
    elif share:
        print(f"Could not create a public share link (that needs the internet); the demo is still served "
              f"at {demo.local_url}", flush=True)

"""A minimal Gradio demo on a saved model folder (the full demo is issue 4)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from .decode import DecodeError, decode_image
from .predict import BUNDLED_MODEL, Predictor
from .preprocess import to_pixels

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTICE = (
    "**Research demo, not a medical device.** It must not be used to diagnose anyone. "
    "Upload an X-ray; the model gives calibrated probabilities and its decision at the "
    "threshold chosen for 95% sensitivity on validation."
)


def build_demo(model_dir: str | Path = BUNDLED_MODEL) -> gr.Blocks:
    """The demo's interface around one `Predictor`."""
    predictor = Predictor(model_dir)

    def classify(path: str | None):
        if not path:
            raise gr.Error("Upload an X-ray image first.")
        try:
            image = decode_image(path)
        except DecodeError as e:
            raise gr.Error(f"Could not read this file: {str(e).split(': ', 1)[-1]}") from None
        result = predictor.predict_pixels(to_pixels(image, predictor.image_size)[None])[0]
        decision = "fracture suspected" if result.fractured else "no fracture detected"
        image.thumbnail((512, 512))
        return image, result.probabilities, f"Decision at threshold {predictor.threshold:.3f}: **{decision}**"

    examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
    with gr.Blocks(title="Fracture Detector", analytics_enabled=False) as demo:
        gr.Markdown(f"# Fracture Detector\n{NOTICE}\n\nModel: `{predictor.config['architecture']}` "
                    f"from `{predictor.model_dir}`")
        with gr.Row():
            with gr.Column():
                # A file, not gr.Image: the upload reaches our decoder untouched, so an
                # unreadable file gets our message instead of Gradio's generic error.
                upload = gr.File(label="X-ray file", file_types=["image"], type="filepath")
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                shown = gr.Image(label="As the model reads it", type="pil", interactive=False)
                label = gr.Label(num_top_classes=2, label="Probabilities")
                decision = gr.Markdown()
        button.click(classify, inputs=upload, outputs=[shown, label, decision], api_name="predict")
        if examples:
            gr.Examples(examples, inputs=upload, label="Example X-rays (Kaggle, ODC-By 1.0)")
    return demo

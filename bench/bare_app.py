"""The ceiling for the demo: a bare Gradio app with the demo's upload, queue and batching settings, no model.

A `gr.File` upload -> a `gr.Label` of fixed probabilities, `batch=True`, the same `MAX_BATCH`,
`concurrency_limit`, queue size and upload limit as `fracture_detector.app`. `bench/app_speed.py`
loads it beside the demo, so the demo's throughput reads as a share of what Gradio itself allows.

    python bench/bare_app.py --port 7861
"""

from __future__ import annotations

import argparse

import gradio as gr

from fracture_detector.app import FILE_TYPES, MAX_BATCH, MAX_UPLOAD

FIXED = {"fractured": 0.5, "not fractured": 0.5}


def build() -> gr.Blocks:
    def classify(paths: list[str | None]) -> list[list[dict]]:
        return [[FIXED for _ in paths]]

    with gr.Blocks(analytics_enabled=False) as demo:
        upload = gr.File(file_types=FILE_TYPES, type="filepath")
        label = gr.Label(num_top_classes=2)
        gr.Button("Classify").click(classify, inputs=upload, outputs=[label], api_name="predict", batch=True,
                                    max_batch_size=MAX_BATCH, concurrency_limit=1)
    demo.queue(max_size=512)
    return demo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=7861)
    args = p.parse_args()
    build().launch(server_name="127.0.0.1", server_port=args.port, max_file_size=MAX_UPLOAD, quiet=True)


if __name__ == "__main__":
    main()

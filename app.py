"""Serve the Gradio demo: `python app.py [--model hf-hub:ORG/NAME | DIR] [--host H] [--port P] [--share]`.

Without `--model`, the `MODEL_ID` environment variable (as a Space sets it) or the bundled
model. If the Hub cannot be reached, the cached copy or the bundled model is served instead.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from fracture_detector.app import build_demo, limit_malloc_arenas, start  # noqa: E402
from fracture_detector.errors import HubError, ModelError  # noqa: E402
from fracture_detector.loading import resolve_for_serving  # noqa: E402
from fracture_detector.resources import BACKENDS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.environ.get("MODEL_ID"),
                   help="hf-hub:ORG/NAME[@REV] or a model folder (default: $MODEL_ID, else the bundled model)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (needs the internet)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs the model (auto: ONNX Runtime where the folder has model.onnx, as the bundled "
                        "model does; else PyTorch)")
    args = p.parse_args()
    limit_malloc_arenas()  # before the model's and the server's threads: resident memory levels off under load
    try:
        model_dir, source = resolve_for_serving(args.model)
        print(f"Model: {source}", flush=True)
        demo = build_demo(model_dir, source, args.backend)
    except (HubError, ModelError) as e:
        sys.exit(f"error: {e}")
    try:
        start(demo, args.host, args.port, args.share)
    except OSError as e:  # Gradio's own message runs to a paragraph; the cause is nearly always a busy port
        sys.exit(f"error: cannot serve on {args.host}:{args.port} ({str(e).splitlines()[0][:160]}): is another "
                 f"server using that port? Choose another with --port")
    demo.block_thread()  # serve until interrupted


if __name__ == "__main__":
    main()

"""Serve the Gradio demo: `python app.py [--model DIR] [--host H] [--port P] [--share]`."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from fracture_detector.app import build_demo  # noqa: E402
from fracture_detector.predict import BUNDLED_MODEL  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=str(BUNDLED_MODEL), help="a saved model folder (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (needs the internet)")
    args = p.parse_args()
    build_demo(args.model).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()

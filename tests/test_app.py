"""The minimal demo answers `/predict` over HTTP through gradio_client."""

from __future__ import annotations

import socket

import pytest
from conftest import ROOT

gradio = pytest.importorskip("gradio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_predict_api_returns_both_labels(tmp_path):
    from gradio_client import Client, handle_file

    from fracture_detector.app import build_demo

    demo = build_demo()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        example = next((ROOT / "examples").glob("fractured_*.jpg"))
        shown, label, decision = client.predict(handle_file(str(example)), api_name="/predict")
        assert shown
        names = {c["label"] for c in label["confidences"]}
        assert names == {"fractured", "not fractured"}
        assert "Decision at threshold" in decision

        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not an image")
        with pytest.raises(Exception, match="Could not read this file"):
            client.predict(handle_file(str(bad)), api_name="/predict")
        # The server keeps answering after a bad input.
        _, label, _ = client.predict(handle_file(str(example)), api_name="/predict")
        assert label["label"] in names
    finally:
        demo.close()

"""Fracture Detector: an honest bone-fracture classifier for X-ray images.

    import fracture_detector
    predictor = fracture_detector.load("hf-hub:ORG/NAME")   # or a local folder
    predictor.predict("xray.png")
"""

__version__ = "0.1.0"


def load(model=None, revision=None, backend="auto"):
    """Load a model as a `Predictor`: the bundled default, `hf-hub:ORG/NAME[@REV]`, `local-dir:PATH` or a path.

    `backend`: "auto" (ONNX Runtime where the folder has a `model.onnx`, as the bundled model does), "onnx" or "torch".
    """
    from .loading import load as _load  # imported here: torch and timm load only when needed

    return _load(model, revision=revision, backend=backend)

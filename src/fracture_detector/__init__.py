"""Fracture Detector: an honest bone-fracture classifier for X-ray images.

    import fracture_detector
    predictor = fracture_detector.load("hf-hub:ORG/NAME")   # or a local folder
    predictor.predict("xray.png")
"""

__version__ = "0.1.0"


def load(model=None, revision=None):
    """Load a model as a `Predictor`: the bundled default, `hf-hub:ORG/NAME[@REV]`, `local-dir:PATH` or a path."""
    from .hub import BUNDLED_MODEL
    from .hub import load as _load

    return _load(model or BUNDLED_MODEL, revision=revision)

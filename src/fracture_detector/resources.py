"""Files that ship inside the package: the bundled model, the example X-rays and the card template.

They are package data, found with `importlib.resources`, so a wheel installed anywhere
(not only an editable checkout) has them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(name: str) -> Path:
    """`name` inside the installed package, as a real path (pip always installs unpacked, never zipped)."""
    return Path(str(files("fracture_detector") / name))


# What can run a model (`predict.Predictor`): ONNX Runtime where there is an export ("auto"), always, or PyTorch.
BACKENDS = ("auto", "onnx", "torch")
BUNDLED_MODEL = package_path("default_model")
EXAMPLES = package_path("examples")
CARD_TEMPLATE = package_path("model_card.md")


def example_xrays() -> list[Path]:
    """The example X-rays shipped with the package (see examples/README.md for their sources and licences)."""
    return sorted(EXAMPLES.glob("*.jpg"))

"""Every error the package raises for a user to read, in one module that imports nothing heavy.

The CLI, the app and the Hub client catch these without loading PyTorch, and no module needs
another's heavy imports just to name an error (this ended the `calibration` <-> `model` import
circle). Each message is meant for the user as it is.
"""

from __future__ import annotations


class ModelError(ValueError):
    """A folder is not a usable model; the message says why."""


class CalibrationError(ModelError):
    """A model's `config.json` lacks what turns its logits into a decision; the message says what."""


class DecodeError(ValueError):
    """A file that cannot be read as an image: `name` is the file, `reason` says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class NotAnXrayError(DecodeError):
    """The file is an image, but it does not look like an X-ray; `finding` says what the check saw."""

    def __init__(self, name: str, finding: str):
        super().__init__(name, f"this does not look like an X-ray ({finding})")
        self.finding = finding  # what the check saw, e.g. "it is a colour image"


class HubError(RuntimeError):
    """A push or a download failed; the message is meant for the user as is."""

"""Which model folder to load: the bundled default, a Hub model (through the Hugging Face cache) or a local
folder; and the policy of a server that must start even when the Hub does not answer.
"""

from __future__ import annotations

from pathlib import Path

from . import hub
from .bundle import check_model_folder
from .predict import Predictor
from .resources import BUNDLED_MODEL


def resolve_model(model: str | Path | None = None, revision: str | None = None,
                  local_files_only: bool = False) -> Path:
    """A local folder holding the model: `hf-hub:ORG/NAME[@REV]` (through the Hugging Face cache),
    `local-dir:PATH`, a plain path, or None for the bundled default.

    Raises `HubError` for a Hub model that cannot be had, `ModelError` for a folder that is not a model.
    """
    spec = str(model or BUNDLED_MODEL)
    if spec.startswith("hf-hub:"):
        repo_id, revision = hub.parse_spec(spec, revision)
        return hub.download(repo_id, revision, local_files_only)
    path = Path(spec.removeprefix("local-dir:")).expanduser()
    check_model_folder(path)
    return path


def resolve_for_serving(model: str | Path | None = None) -> tuple[Path, str]:
    """`resolve_model` for a server that must start: the folder and one line saying where it came from.

    When the Hub cannot be reached, a Hub model comes from the local cache if it is there,
    else the bundled model is served; the line says so. Other failures (no such repository,
    a local folder that is not a model) raise.
    """
    if not model:
        return BUNDLED_MODEL, "the bundled model (fracture_detector/default_model)"
    spec = str(model)
    if not spec.startswith("hf-hub:"):
        return resolve_model(spec), f"local folder {spec}"
    repo_id, revision = hub.parse_spec(spec)
    if not hub.answers(repo_id, revision):
        unreachable = hub.unreachable_reason()
        try:
            folder = resolve_model(spec, local_files_only=True)
        except hub.HubError:
            return BUNDLED_MODEL, f"the bundled model: {unreachable} and {spec} is not in the local cache"
        return folder, f"{spec} (revision {folder.name[:12]}) from the local cache: {unreachable}"
    folder = resolve_model(spec)
    return folder, f"{spec} (revision {folder.name[:12]}) from {hub.endpoint()}"


def load(model: str | Path | None = None, revision: str | None = None, backend: str = "auto") -> Predictor:
    """A `Predictor` for `model` (see `resolve_model`), with its preprocessing, labels and calibration."""
    return Predictor(resolve_model(model, revision), backend)

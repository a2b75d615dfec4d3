"""Publish a model folder to a Hub and load models back, from the Hub, its cache or disk.

Works with any Hub-compatible endpoint: `huggingface_hub` reads `HF_ENDPOINT` (a mirror
or a self-hosted Hub) and `HF_TOKEN`. Every failure becomes one `HubError` whose message
says what went wrong; the token never appears in it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .card import rewrite_model_card
from .predict import BUNDLED_MODEL, Predictor

# What a push uploads: weights as safetensors only, never pickles; no training checkpoints.
PUSH_PATTERNS = ("config.json", "model.safetensors", "README.md", "metrics.json", "data_report.json",
                 "train_config.json", "split_manifest.csv.gz", "*.png")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
REQUIRED_FILES = ("config.json", "model.safetensors")


class HubError(RuntimeError):
    """A push or a download failed; the message is meant for the user as is."""


def check_model_folder(folder: Path) -> None:
    """Raise `HubError` unless `folder` holds a saved model (config and safetensors weights)."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise HubError(f"{folder}: not a saved model folder (missing {', '.join(missing)})")


def _explain(e: Exception, repo_id: str, revision: str | None, filename: str | None = None) -> str:
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    endpoint = constants.ENDPOINT
    if isinstance(e, RepositoryNotFoundError):
        return f"{repo_id}: no such model on {endpoint} (or it is private and your token cannot see it)"
    if isinstance(e, RevisionNotFoundError):
        return f"{repo_id}: no revision {revision!r} on {endpoint}"
    if isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled):
        return (f"{where}: {filename or 'the model'} is not in the local cache and the Hub is not reachable "
                f"(offline mode or no connection to {endpoint})")
    if isinstance(e, EntryNotFoundError):
        return f"{where}: the repository has no file {filename!r}"
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            return (f"{endpoint} refused the request (HTTP {status}): set HF_TOKEN to a token that may "
                    f"write to {repo_id}")
        if status == 413:
            return f"{endpoint} refused the upload as too large (HTTP 413): check your storage quota"
        return f"{where}: the Hub answered HTTP {status}: {str(e).splitlines()[0]}"
    if isinstance(e, httpx2.TransportError | ConnectionError | OSError):
        return f"cannot reach the Hub at {endpoint}: {type(e).__name__}: {e}"
    return f"{where}: {type(e).__name__}: {e}"


def push(
    model_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload fracture-detector model",
) -> str:
    """Upload a saved model folder to `repo_id` and return the commit URL.

    The card is re-rendered for `repo_id` in a temporary copy, so the local folder is
    never modified, whether the push succeeds or not.
    """
    folder = Path(model_dir)
    check_model_folder(folder)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        for pattern in PUSH_PATTERNS:
            for path in folder.glob(pattern):
                shutil.copy2(path, staged / path.name)
        size = sum(p.stat().st_size for p in staged.iterdir())
        if size > MAX_UPLOAD_BYTES:
            limit = MAX_UPLOAD_BYTES // 2**20
            raise HubError(f"{folder}: {size / 2**20:.0f} MiB to upload, over the {limit} MiB limit")
        if (staged / "metrics.json").is_file() and (staged / "train_config.json").is_file():
            rewrite_model_card(staged, repo_id=repo_id)
        api = HfApi(library_name="fracture-detector")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=staged, revision=revision,
                                     commit_message=commit_message)
        except Exception as e:  # every client failure becomes one clear message
            raise HubError(_explain(e, repo_id, revision)) from None
    return info.commit_url


def _hub_spec(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """`hf-hub:ORG/NAME[@REV]` -> (repo id, revision); a revision in the spec wins over `revision`."""
    repo_id, _, in_spec = spec.removeprefix("hf-hub:").partition("@")
    return repo_id, in_spec or revision


def resolve(model: str | Path | None = None, revision: str | None = None, local_files_only: bool = False) -> Path:
    """A local folder holding the model: `hf-hub:ORG/NAME[@REV]`, `local-dir:PATH`, a plain path,
    or None for the bundled default.

    Hub models go through the Hugging Face cache, so they load offline (`HF_HUB_OFFLINE=1`,
    or `local_files_only`) once downloaded.
    """
    spec = str(model or BUNDLED_MODEL)
    if spec.startswith("hf-hub:"):
        repo_id, revision = _hub_spec(spec, revision)
        folder = None
        for filename in REQUIRED_FILES:
            try:
                path = hf_hub_download(repo_id, filename, revision=revision, local_files_only=local_files_only)
            except Exception as e:
                raise HubError(_explain(e, repo_id, revision, filename)) from None
            folder = Path(path).parent
        return folder
    path = Path(spec.removeprefix("local-dir:")).expanduser()
    check_model_folder(path)
    return path


def resolve_for_serving(model: str | Path | None = None) -> tuple[Path, str]:
    """`resolve` for a server that must start: the folder and one line saying where it came from.

    When the Hub cannot be reached, a Hub model comes from the local cache if it is there,
    else the bundled model is served; the line says so. Other failures (no such repository,
    a local folder that is not a model) raise `HubError`.
    """
    if not model:
        return BUNDLED_MODEL, "the bundled model (models/default)"
    spec = str(model)
    if not spec.startswith("hf-hub:"):
        return resolve(spec), f"local folder {spec}"
    repo_id, revision = _hub_spec(spec)
    try:  # one light request tells "unreachable" apart from "no such model"
        HfApi().model_info(repo_id, revision=revision, timeout=10)
    except HfHubHTTPError as e:
        raise HubError(_explain(e, repo_id, revision)) from None
    except Exception:
        unreachable = ("offline mode is on (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE
                       else f"the Hub at {constants.ENDPOINT} is unreachable")
        try:
            folder = resolve(spec, local_files_only=True)
        except HubError:
            return BUNDLED_MODEL, f"the bundled model: {unreachable} and {spec} is not in the local cache"
        return folder, f"{spec} (revision {folder.name[:12]}) from the local cache: {unreachable}"
    folder = resolve(spec)
    try:  # the headline numbers the app shows, when the repository has them
        hf_hub_download(repo_id, "metrics.json", revision=revision)
    except Exception:
        pass
    return folder, f"{spec} (revision {folder.name[:12]}) from {constants.ENDPOINT}"


def load(model: str | Path | None = None, revision: str | None = None) -> Predictor:
    """A `Predictor` for `model` (see `resolve`), with its preprocessing, labels, temperature and threshold."""
    return Predictor(resolve(model, revision))

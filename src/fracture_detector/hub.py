"""Talk to a Hub: push a model folder, download one into the Hugging Face cache, tell if it answers.

Works with any Hub-compatible endpoint: `huggingface_hub` reads `HF_ENDPOINT` (a mirror
or a self-hosted Hub) and `HF_TOKEN`. Every failure becomes one `HubError` whose message
says what went wrong; the token never appears in it. Which model to serve when the Hub
does not answer is the caller's policy (`loading.resolve_for_serving`), not this module's.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .bundle import REQUIRED_FILES, check_model_folder
from .card import render_model_card
from .errors import HubError
from .onnx_model import ONNX_FILE, check_export, recorded_metadata
from .xray_check import STATS_FILE

# What a push uploads: weights as safetensors only, never pickles; no training checkpoints.
# README.md is not in the list: the card is rendered for the target repository.
PUSH_PATTERNS = ("config.json", "model.safetensors", STATS_FILE, ONNX_FILE, "metrics.json", "data_report.json",
                 "train_config.json", "split_manifest.csv.gz", "*.png")
# What loading a model downloads: enough to predict, check inputs and show its results.
DOWNLOAD_PATTERNS = (*REQUIRED_FILES, STATS_FILE, ONNX_FILE, "metrics.json")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


def parse_spec(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """`hf-hub:ORG/NAME[@REV]` -> (repo id, revision); a revision in the spec wins over `revision`."""
    repo_id, _, in_spec = spec.removeprefix("hf-hub:").partition("@")
    return repo_id, in_spec or revision


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
    """Upload a saved model folder to `repo_id` in one commit and return the commit URL.

    The card is rendered for `repo_id` in memory and sent in the same commit as the files
    (`create_commit`, which `upload_folder` wraps), so the local folder is never modified,
    whether the push succeeds or not. Raises `ModelError` for a folder that is not a model,
    or whose `model.onnx` was exported from other weights.
    """
    folder = Path(model_dir)
    check_model_folder(folder)
    if (folder / ONNX_FILE).is_file():
        check_export(recorded_metadata(folder / ONNX_FILE, folder), folder / ONNX_FILE, folder)
    files = sorted({path for pattern in PUSH_PATTERNS for path in folder.glob(pattern) if path.is_file()})
    card = render_model_card(folder, repo_id).content.encode() if (folder / "metrics.json").is_file() else None
    if card is None and (folder / "README.md").is_file():
        card = (folder / "README.md").read_bytes()  # a folder we did not train: its own card, as is
    size = sum(path.stat().st_size for path in files) + len(card or b"")
    if size > MAX_UPLOAD_BYTES:
        raise HubError(f"{folder}: {size / 2**20:.0f} MiB to upload, over the {MAX_UPLOAD_BYTES // 2**20} MiB limit")
    operations = [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)) for path in files]
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
    api = HfApi(library_name="fracture-detector")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    except Exception as e:  # every client failure becomes one clear message
        raise HubError(_explain(e, repo_id, revision)) from None
    return info.commit_url


def download(repo_id: str, revision: str | None = None, local_files_only: bool = False) -> Path:
    """The model's files (`DOWNLOAD_PATTERNS`) in the Hugging Face cache; returns the snapshot folder.

    Once downloaded, a model loads offline (`HF_HUB_OFFLINE=1`, `local_files_only`, or an
    unreachable Hub: the cached snapshot of that revision is used).
    """
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(DOWNLOAD_PATTERNS),
                                        local_files_only=local_files_only))
    except Exception as e:
        raise HubError(_explain(e, repo_id, revision)) from None
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise HubError(_explain(EntryNotFoundError(name), repo_id, revision, name))
    return folder


def answers(repo_id: str, revision: str | None = None) -> bool:
    """True if the Hub answers for `repo_id`, False if it cannot be reached, fails on its side (a 5xx
    answer) or offline mode is on.

    An answer that is an error about the request (no such repository or revision, no access) raises `HubError`.
    """
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=10)
    except HfHubHTTPError as e:
        if e.response is not None and e.response.status_code >= 500:
            return False  # the Hub's own failure: served from the cache, as when it is unreachable
        raise HubError(_explain(e, repo_id, revision)) from None
    except Exception:
        return False
    return True


def endpoint() -> str:
    """The Hub endpoint in use (`HF_ENDPOINT`, else the Hugging Face Hub)."""
    return constants.ENDPOINT


def unreachable_reason() -> str:
    """Why the Hub did not answer, in words."""
    if constants.HF_HUB_OFFLINE:
        return "offline mode is on (HF_HUB_OFFLINE)"
    return f"the Hub at {constants.ENDPOINT} is unreachable or failing"

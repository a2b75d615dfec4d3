"""Resumable training checkpoints in safetensors + JSON (nothing is ever unpickled).

Our own, because `accelerate`'s `save_state` pickles the optimizer and RNG state.

Each epoch writes a fresh folder `epoch-NNNN/` and then atomically repoints the file
`latest` at it, so a run killed at any moment resumes from the last complete epoch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class MissingWeightAverage(FileNotFoundError):
    """A resume asked for the weight average that the interrupted run did not keep."""


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The folder `latest` points at: the last complete epoch (None before the first)."""
    pointer = ckpt_dir / "latest"
    return ckpt_dir / pointer.read_text().strip() if pointer.is_file() else None


def save_checkpoint(ckpt_dir: Path, epoch: int, model: torch.nn.Module, optimizer, state: dict,
                    ema: torch.nn.Module | None = None) -> None:
    """Write epoch `epoch`'s model, optimizer, weight average (if any) and training state, then point `latest` at it."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    target = ckpt_dir / f"epoch-{epoch:04d}"
    tmp = ckpt_dir / f".tmp-epoch-{epoch:04d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_weights(tmp / "model.safetensors", model)
    if ema is not None:
        save_weights(tmp / "ema.safetensors", ema)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({**state, "epoch": epoch, "optimizer": opt_meta}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    pointer = ckpt_dir / ".latest.tmp"
    pointer.write_text(target.name)
    os.replace(pointer, ckpt_dir / "latest")
    for old in ckpt_dir.glob("epoch-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(ckpt_dir: Path, model: torch.nn.Module, optimizer,
                    ema: torch.nn.Module | None = None) -> dict | None:
    """Restore the latest complete checkpoint into `model`, `optimizer` and `ema`; returns its state or None.

    Raises `MissingWeightAverage` when `ema` is given but the run kept none.
    """
    folder = latest_checkpoint(ckpt_dir)
    if folder is None:
        return None
    if ema is not None and not (folder / "ema.safetensors").is_file():
        raise MissingWeightAverage(f"{folder} holds no weight average")
    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(folder / "model.safetensors"))
    if ema is not None:
        ema.load_state_dict(load_file(folder / "ema.safetensors"))
    optimizer.load_state_dict(
        _unflatten_optimizer(load_file(folder / "optimizer.safetensors"), state.pop("optimizer"))
    )
    return state


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Model weights only, atomically (used for the best-so-far model)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)

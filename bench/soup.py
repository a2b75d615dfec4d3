"""A weight average of seed runs ("model soup") and flip averaging, scored at a hospital never seen.

Reads the model folders that `bench/unseen_site.py --keep-models DIR` kept (DIR/recipe/held-out/seed).
For each held-out source, the seed runs of one recipe start from the same ImageNet weights and
none of them saw that source. Their uniform soup averages every tensor (batch-norm statistics
included) into one model. Each member and the soup are scored on the held-out source's clean
test split of every seed (so all of them on the same X-rays), with and without horizontal-flip
averaging (logits of the image and its mirror image averaged). The soup of the members' raw
last-epoch weights (their last checkpoints) is scored too, beside the weights they ship (for an
EMA recipe, the average over steps).

ROC-AUC only: the members' validation splits differ, so no threshold is chosen for a soup here.

    python bench/soup.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf fracatlas=/tmp/fra \\
        --models /tmp/loso-models/ema
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from common import add_out_argument, loadavg, md_table, write_results
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from unseen_site import all_sources, recipe, unseen_test

from fracture_detector.calibration import POSITIVE_LABEL
from fracture_detector.checkpoint import latest_checkpoint
from fracture_detector.data import split_groups
from fracture_detector.evaluate import positive_probability
from fracture_detector.model import load_model, predict_logits


def soup(models: list[torch.nn.Module]) -> torch.nn.Module:
    """One model whose every floating-point tensor is the mean of the members' (counters: the first member's)."""
    states = [m.state_dict() for m in models]
    averaged = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
                for k, v in states[0].items()}
    out = copy.deepcopy(models[0])
    out.load_state_dict(averaged)
    return out.eval()


def raw_weights(model_dir: Path) -> torch.nn.Module:
    """The run's model with its last checkpoint's raw weights instead of the weights it ships."""
    model, _ = load_model(model_dir)
    model.load_state_dict(load_file(latest_checkpoint(model_dir / "checkpoints") / "model.safetensors"))
    return model.eval()


def roc_auc(model: torch.nn.Module, pixels: np.ndarray, is_pos: np.ndarray, positive: int, flip: bool) -> float:
    logits = predict_logits(model, pixels)
    if flip:
        logits = (logits + predict_logits(model, np.ascontiguousarray(pixels[:, :, ::-1]))) / 2
    return float(roc_auc_score(is_pos, positive_probability(logits.numpy(), positive)))


def score_held_out(folder: Path, images, seeds: list[int], positive: int) -> dict:
    """Every member, the soup and the soup of raw weights, with and without flip, on each seed's test split."""
    members = {int(d.name): d for d in sorted(folder.iterdir()) if (d / "config.json").is_file()}
    shipped = {seed: load_model(d)[0] for seed, d in members.items()}
    models = {f"member seed {seed}": m for seed, m in shipped.items()}
    models["soup"] = soup(list(shipped.values()))
    models["soup of raw last-epoch weights"] = soup([raw_weights(d) for d in members.values()])
    scores = {name: {"plain": [], "flip": []} for name in models}
    for seed in seeds:
        split_groups(images, seed=seed)  # the split training on all sources with this seed makes
        idx, _ = unseen_test(images, folder.name)
        is_pos = images.labels[idx] == positive
        for name, model in models.items():
            for mode in ("plain", "flip"):
                scores[name][mode].append(roc_auc(model, images.pixels[idx], is_pos, positive, mode == "flip"))
    return {"members": sorted(members), "test_split_seeds": seeds, "roc_auc": scores}


def markdown(results: dict) -> str:
    rows = []
    for held_out, r in sorted(results["held_out"].items()):
        auc = {name: {mode: np.mean(v) for mode, v in s.items()} for name, s in r["roc_auc"].items()}
        member_means = [a["plain"] for name, a in auc.items() if name.startswith("member")]
        member_flip = [a["flip"] for name, a in auc.items() if name.startswith("member")]
        rows.append([held_out, len(member_means),
                     f"{np.mean(member_means):.3f} (from {min(member_means):.3f} to {max(member_means):.3f})",
                     f"{np.mean(member_flip):.3f}", f"{auc['soup']['plain']:.3f}", f"{auc['soup']['flip']:.3f}",
                     f"{auc['soup']['plain'] - np.mean(member_means):+.3f}",
                     f"{auc['soup of raw last-epoch weights']['plain']:.3f}"])
    header = ["held-out source", "members", "ROC-AUC, members (mean; range)", "members with flip", "soup",
              "soup with flip", "soup - members' mean", "soup of raw last-epoch weights"]
    return (f"Recipe `{results['recipe']}`: each value is the mean ROC-AUC over the held-out source's clean test "
            "splits of seeds " + ", ".join(map(str, results["test_split_seeds"])) + "; `python bench/soup.py`.\n\n"
            + md_table(header, rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER sources, as given to bench/unseen_site.py")
    p.add_argument("--models", type=Path, required=True, help="DIR/recipe of bench/unseen_site.py --keep-models")
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    folders = sorted(d for d in args.models.iterdir() if d.is_dir())
    first = next(d for f in folders for d in sorted(f.iterdir()) if (d / "train_config.json").is_file())
    options = recipe(first / "train_config.json")
    seeds = sorted({int(d.name) for f in folders for d in f.iterdir() if d.name.isdigit()})
    images = all_sources(args.data, options, seeds[0])  # decoded once; re-split per seed
    positive = images.label_names.index(POSITIVE_LABEL)
    held_out = {f.name: score_held_out(f, images, seeds, positive) for f in folders}
    results = {"recipe": args.models.name, "test_split_seeds": seeds, "held_out": held_out}
    write_results(Path(args.out), results, markdown(results), before)
    print(markdown(results))


if __name__ == "__main__":
    main()

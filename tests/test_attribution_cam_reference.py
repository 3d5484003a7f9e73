"""Our CAMs on the template against pytorch-grad-cam (grad-cam 1.5.7) and Captum: the same maps.

pytorch-grad-cam ReLUs and min-max scales its maps to the input size; the layers here keep the input's resolution,
so the only difference left is that scaling, which ``_scaled`` applies to ours.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.attribution import AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus

pgc = pytest.importorskip("pytorch_grad_cam", reason="optional peer library for reference checks (xai-bench[bench])")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),  # [1]: the explained layer, at the input's 12×12
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    ).eval()
    with torch.no_grad():  # gradients well above the 1e-6 pytorch-grad-cam adds to Grad-CAM++'s denominator
        net[6].weight.mul_(1000)
    return net


def images() -> torch.Tensor:
    return torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))


def _scaled(cam: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's output scaling: ReLU, then min-max with a 1e-7 guard, once per layer and once more after
    averaging the layers (the guard matters for maps whose values are that small)."""
    cam = cam[:, 0].double().clamp_min(0)
    for _ in range(2):
        cam = cam - cam.flatten(1).amin(1).view(-1, 1, 1)
        cam = cam / (1e-7 + cam.flatten(1).amax(1).view(-1, 1, 1))
    return cam.float()


@pytest.mark.parametrize(("ours", "theirs"), [(GradCAM, "GradCAM"), (GradCAMPlusPlus, "GradCAMPlusPlus"),
                                              (AblationCAM, "AblationCAM")])
def test_cams_match_pytorch_grad_cam(ours, theirs):
    net, x, t = model(), images(), [1, 3, 0]
    mine = ours(net, net[1]).attribute(x, target=t)
    with getattr(pgc, theirs)(model=net, target_layers=[net[1]]) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in t]))
    assert mine.shape == (3, 1, 12, 12) and mine.abs().sum() > 0
    assert torch.allclose(_scaled(mine), ref, atol=1e-4), (_scaled(mine) - ref).abs().max()


def test_gradcam_is_captums_layer_gradcam():
    from captum.attr import LayerGradCam

    net, x, t = model(), images(), torch.tensor([2, 0, 1])
    for layer in (net[1], net[3]):
        for relu in (True, False):
            ref = LayerGradCam(net, layer).attribute(x, target=t, relu_attributions=relu)
            assert torch.allclose(GradCAM(net, layer).attribute(x, target=t, relu_attributions=relu), ref, atol=1e-6)


def test_eigencam_is_pytorch_grad_cams_projection_up_to_sign():
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    net, x = model(), images()
    with torch.no_grad():
        acts = net[:2](x)
    ref = torch.from_numpy(get_2d_projection(acts.numpy()))  # theirs: no sign convention
    mine = EigenCAM(net, net[1]).attribute(x, relu_attributions=False)[:, 0]
    for m, r in zip(mine, ref):
        assert any(torch.allclose(s * m, r, atol=1e-4) for s in (1.0, -1.0))


def test_ablationcam_subset_and_batching():
    net, x, t = model(), images(), [1, 3, 0]
    cam = AblationCAM(net, net[1])
    full = cam.attribute(x, target=t, relu_attributions=False)
    assert torch.allclose(full, cam.attribute(x, target=t, relu_attributions=False, batch_size=5), atol=1e-5)
    # the K' channels of largest mean activation: the others get weight 0, so K' = K is the full map
    assert torch.allclose(full, cam.attribute(x, target=t, relu_attributions=False, max_channels=6), atol=1e-6)
    part = cam.attribute(x, target=t, relu_attributions=False, max_channels=2)
    assert not torch.allclose(full, part)
    assert all(not m._forward_hooks for m in net.modules())


def test_ablationcam_weights_are_relative_score_drops():
    # layer = identity on the input, so the ablated scores can be computed by hand
    torch.manual_seed(0)
    net = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    x = torch.rand(1, 2, 4, 4)
    cam = AblationCAM(net, net[0]).attribute(x, target=2, relu_attributions=False)
    y = net(x)[0, 2]
    expected = torch.zeros(4, 4)
    for k in range(2):
        ablated = x.clone()
        ablated[0, k] = 0
        expected += (y - net(ablated)[0, 2]) / y * x[0, k]
    assert torch.allclose(cam[0, 0], expected, atol=1e-5)

"""The CAMs on a real ImageNet model point at the object through the default layer (issue 9).

EfficientNet-Lite0's default layer used to be ``net._conv_head`` (before batch-norm and ReLU6): Eigen-CAM lit the
bottom border of every photo and Score-CAM's cat map peaked in a corner. The composite is the one of
``tests/test_explain.py``: chelsea (left) and coffee (right) on grey, here scaled to one 224×224 input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import xai_bench  # noqa: F401  (before torchvision)
from conftest import attribution_node
from xai_bench.attribution.runner import build_attribution
from xai_bench.models import create_model

TABBY, ESPRESSO = 281, 967


def _composite(cat: bool = True, cup: bool = True) -> torch.Tensor:
    import skimage.data
    from PIL import Image

    def square(a: np.ndarray) -> Image.Image:
        h, w = a.shape[:2]
        s, top, left = min(h, w), (h - min(h, w)) // 2, (w - min(h, w)) // 2
        return Image.fromarray(a[top:top + s, left:left + s]).resize((112, 112), Image.BICUBIC)

    canvas = Image.new("RGB", (224, 224), (128, 128, 128))
    if cat:
        canvas.paste(square(skimage.data.chelsea()), (0, 56))
    if cup:
        canvas.paste(square(skimage.data.coffee()), (112, 56))
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float().div(255).unsqueeze(0)


def _blob_peak(m: torch.Tensor) -> tuple[int, int]:
    """(row, col) of the peak of the map averaged over 16×16 cells: where the blob is, not one hot pixel."""
    cells = F.avg_pool2d(m.view(1, 1, *m.shape[-2:]), 16)[0, 0]
    r, c = divmod(int(cells.flatten().argmax()), cells.shape[1])
    return r * 16 + 8, c * 16 + 8


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return create_model("efficientnet_lite0", pretrained=True).eval()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "gradcam_plus_plus", "scorecam"])
def test_class_cams_peak_on_the_object_of_their_class(lite0, method):
    x = _composite()
    maps = build_attribution(attribution_node(method), lite0).attribute(x, torch.tensor([[TABBY, ESPRESSO]]))
    maps = maps[0, :, 0]
    assert maps.shape == (2, 224, 224) and torch.isfinite(maps).all()
    left = maps[:, :, :112].sum((1, 2)) / maps.sum((1, 2))
    assert left[0] > 0.55 and left[1] < 0.45, left  # more of the tabby map on the cat, of the espresso map on the cup
    for m, lo, hi in ((maps[0], 0, 112), (maps[1], 112, 224)):
        row, col = _blob_peak(m)
        assert 56 <= row < 168 and lo <= col < hi, (method, row, col)  # inside the object's photo


@pytest.mark.slow
@pytest.mark.parametrize("cat", [True, False], ids=["cat", "cup"])
def test_eigencam_peaks_on_the_object_not_the_border(lite0, cat):
    """Eigen-CAM is class-agnostic, so each object is shown alone on grey."""
    x = _composite(cat=cat, cup=not cat)
    m = build_attribution(attribution_node("eigencam"), lite0).attribute(x, None)[0, 0]
    row, col = _blob_peak(m)
    lo, hi = (0, 112) if cat else (112, 224)
    assert 56 <= row < 168 and lo <= col < hi, (row, col)
    inside = m[56:168, lo:hi].sum() / m.sum()
    assert inside > 0.5, float(inside)


@pytest.mark.slow
def test_eigencam_does_not_light_the_border_of_the_bundled_photos(lite0):
    """The symptom of the old pre-activation default: on the five bundled photos Eigen-CAM put 36–74 % of its mass
    (mean 60 %) in the 32-px frame around the image (49 % of the area); after the activation it puts 1–31 %
    (mean 11 %)."""
    from xai_bench.data import samples
    from xai_bench.tasks.setup import prepare_for_model

    data = prepare_for_model(samples(), lite0)
    x = torch.stack([data.test[i]["image"] for i in range(len(data.test))])
    maps = build_attribution(attribution_node("eigencam"), lite0).attribute(x, None)[:, 0]
    frame = 1 - maps[:, 32:192, 32:192].sum((1, 2)) / maps.sum((1, 2))
    assert frame.max() < 0.4 and frame.mean() < 0.25, frame

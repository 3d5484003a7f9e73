"""BatchedFeatureAblation and BatchedOcclusion compute Captum's FeatureAblation and Occlusion (the references) with the
ablated copies batched."""

from __future__ import annotations

import pytest
import torch
from captum.attr import FeatureAblation

from xai_bench.attribution.feature_ablation import BatchedFeatureAblation
from xai_bench.models import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=6, in_chans=3).eval()


def _mask(n: int, size: int = 32) -> torch.Tensor:
    grid = torch.arange(size)
    mask = (grid.view(1, 1, size, 1) // 8 * 4 + grid.view(1, 1, 1, size) // 8).expand(n, 1, size, size).clone()
    mask[1] = mask[1] % 5  # another image, fewer features (ids 0-4): features 5-15 are absent from it
    return mask


@pytest.mark.parametrize("baseline", ["zero", "half", "tensor"])
@pytest.mark.parametrize("per_eval", [1, 7, 100])
def test_equals_captum_feature_ablation(model, baseline, per_eval):
    g = torch.Generator().manual_seed(1)
    x, t = torch.rand(3, 3, 32, 32, generator=g), torch.tensor([0, 3, 5])
    base = {"zero": 0.0, "half": 0.5, "tensor": torch.rand(3, 3, 32, 32, generator=g)}[baseline]
    mask = _mask(3)
    ref = FeatureAblation(model).attribute(x, target=t, feature_mask=mask, baselines=base,
                                           perturbations_per_eval=per_eval).detach()
    ours = BatchedFeatureAblation(model).attribute(x, target=t, feature_mask=mask, baselines=base,
                                                   perturbations_per_eval=per_eval)
    assert ours.shape == ref.shape == x.shape
    assert ref.abs().max() > 0
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()
    # every position of a feature holds that feature's one score difference
    for k in range(16):
        values = ours[0][mask[0].expand(3, -1, -1) == k]
        assert torch.all(values == values[0])


def test_per_scalar_features_by_default(model):
    x, t = torch.rand(1, 3, 32, 32), torch.tensor([2])
    ref = FeatureAblation(model).attribute(x, target=t, perturbations_per_eval=512).detach()
    ours = BatchedFeatureAblation(model).attribute(x, target=t, perturbations_per_eval=512)
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_one_forward_pass_per_chunk_with_the_clean_images_in_the_first(model):
    calls = []

    def counted(images):
        calls.append(images.shape[0])
        return model(images)

    BatchedFeatureAblation(counted).attribute(torch.rand(2, 3, 32, 32), target=[1, 2], feature_mask=_mask(2),
                                              perturbations_per_eval=10)
    assert calls == [2 + 2 * 10, 2 * 6]  # 16 features: chunks of 10 and 6; the clean pair rides in the first


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"feature_mask": torch.zeros(1, 1, 32, 32)}, "integer feature ids"),
    ({"feature_mask": -torch.ones(1, 1, 32, 32, dtype=torch.long)}, "negative ids"),
    ({"feature_mask": torch.zeros(1, 1, 16, 16, dtype=torch.long)}, "does not broadcast"),
    ({"target": [1, 2]}, "2 entries .* 1 examples"),
    ({"target": None}, "needs a target"),
])
def test_bad_arguments_are_named(model, kwargs, match):
    args = {"target": 1, "feature_mask": torch.zeros(1, 1, 32, 32, dtype=torch.long), **kwargs}
    with pytest.raises(ValueError, match=match):
        BatchedFeatureAblation(model).attribute(torch.rand(1, 3, 32, 32), **args)


@pytest.mark.parametrize(("window", "stride"), [((3, 8, 8), (3, 4, 4)), ((3, 8, 8), (3, 8, 8)),
                                                ((3, 7, 5), (3, 3, 4)), ((1, 6, 6), (1, 5, 5)),
                                                ((3, 32, 32), (3, 1, 1))])
@pytest.mark.parametrize("baseline", ["half", "tensor"])
def test_occlusion_equals_captum_occlusion(model, window, stride, baseline):
    """Windows cut by the border (7×5 by 3, 4), windows per channel (1, 6, 6), one window over the whole image."""
    from captum.attr import Occlusion

    from xai_bench.attribution.feature_ablation import BatchedOcclusion

    g = torch.Generator().manual_seed(2)
    x, t = torch.rand(3, 3, 32, 32, generator=g), torch.tensor([0, 3, 5])
    base = 0.5 if baseline == "half" else torch.rand(3, 3, 32, 32, generator=g)
    for per_eval in (1, 9):
        ref = Occlusion(model).attribute(x, sliding_window_shapes=window, strides=stride, target=t, baselines=base,
                                         perturbations_per_eval=per_eval).detach()
        ours = BatchedOcclusion(model).attribute(x, sliding_window_shapes=window, strides=stride, target=t,
                                                 baselines=base, perturbations_per_eval=per_eval)
        assert ref.abs().max() > 0
        assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_occlusion_refuses_gaps_between_windows(model):
    from xai_bench.attribution.feature_ablation import BatchedOcclusion

    with pytest.raises(ValueError, match="stride ≤ the window"):
        BatchedOcclusion(model).attribute(torch.rand(1, 3, 32, 32), (3, 5, 5), (3, 13, 13), target=0)


def test_both_report_each_pass_to_the_progress_callback(model):
    """The enclosing progress callback sees every pass (the web app's Stop raises from it), bar drawn or not."""
    from xai_bench.attribution.feature_ablation import BatchedOcclusion
    from xai_bench.progress import progress_reporting

    seen = []
    with progress_reporting(enabled=False, callback=lambda desc, done, total: seen.append((desc, done, total))):
        BatchedFeatureAblation(model).attribute(torch.rand(2, 3, 32, 32), target=[1, 2], feature_mask=_mask(2),
                                                perturbations_per_eval=10)
        BatchedOcclusion(model).attribute(torch.rand(1, 3, 32, 32), (3, 8, 8), (3, 8, 8), target=0,
                                          perturbations_per_eval=10)
    assert seen == [("Feature Ablation", 20, 32), ("Feature Ablation", 32, 32), ("Occlusion", 10, 16),
                    ("Occlusion", 16, 16)]

    class Stop(Exception):
        pass

    def stop(desc, done, total):
        raise Stop

    with pytest.raises(Stop), progress_reporting(enabled=False, callback=stop):
        BatchedOcclusion(model).attribute(torch.rand(1, 3, 32, 32), (3, 8, 8), (3, 8, 8), target=0)

"""L2X: trained briefly on synthetic_shapes it localises objects better than the random map; training resumes
exactly; the method is one forward pass of the explainer and refuses a missing or wrong checkpoint."""

from __future__ import annotations

import pytest
import torch

import xai_bench  # noqa: F401  (before torchvision)
from conftest import compose_cfg
from xai_bench.tasks import train

BASE = ["dataset.n_train=1000", "dataset.n_val=100", "dataset.n_test=64", "dataset.image_size=32",
        "trainer.batch_size=64", "trainer.eval_batch_size=256", "trainer.progress=false", "logger=none"]
L2X = ["task=l2x", "model=checkpoint", "optim=adamw", "scheduler=none"]


@pytest.fixture(scope="module")
def black_box(tmp_path_factory):
    """A small_cnn trained for 4 epochs on 1,000 shapes (weak, ~44 % top-1, but its predictions depend on the
    object), and its checkpoint folder."""
    from hydra.core.global_hydra import GlobalHydra

    out = tmp_path_factory.mktemp("bb")
    train.run(compose_cfg("train", [*BASE, "trainer.max_epochs=4"], out))
    GlobalHydra.instance().clear()
    return out / "best"


def _shapes(n: int = 64):
    from xai_bench.data import synthetic_shapes

    d = synthetic_shapes(n_train=0, n_val=0, n_test=n, image_size=32)
    items = [d.test[i] for i in range(n)]
    return (torch.stack([i["image"] for i in items]), torch.tensor([i["label"] for i in items]),
            torch.stack([i["mask"] for i in items]))


@pytest.mark.slow  # ~20 s: two short trainings
def test_l2x_localises_better_than_random(black_box, tmp_path):
    from xai_bench.attribution.reference_maps import RandomMap
    from xai_bench.attribution.runner import build_attribution
    from conftest import attribution_node
    from xai_bench.metrics.explanation.localisation import PointingGame, RelevanceMassAccuracy
    from xai_bench.models import load_checkpoint

    metrics = train.run(compose_cfg("train", [*BASE, *L2X, f"model.path={black_box}", "trainer.max_epochs=4"],
                                    tmp_path / "l2x"))
    assert 0 <= metrics["test/posthoc_acc"] <= 1 and (tmp_path / "l2x" / "best" / "model.safetensors").is_file()
    model = load_checkpoint(black_box)
    node = attribution_node("l2x")
    node.method.path = str(tmp_path / "l2x" / "best")
    x, y, masks = _shapes()
    maps = build_attribution(node, model).attribute(x, y)
    assert maps.shape == (64, 1, 32, 32) and torch.allclose(maps.sum((1, 2, 3)) / 16, torch.ones(64))
    rand = RandomMap(model).attribute(x)
    for metric in (PointingGame(), RelevanceMassAccuracy()):
        ours, chance = metric(None, x, y, maps, masks=masks).nanmean(), metric(None, x, y, rand, masks=masks).nanmean()
        # measured: pointing game 0.86 vs 0.20, relevance mass 0.51 vs 0.19
        assert ours > chance + 0.2, (metric.name, ours, chance)


def test_l2x_training_resumes_exactly(black_box, tmp_path):
    small = [*BASE[:1], "dataset.n_train=200", *BASE[1:], *L2X, f"model.path={black_box}"]
    train.run(compose_cfg("train", [*small, "trainer.max_epochs=2"], tmp_path / "full"))
    train.run(compose_cfg("train", [*small, "trainer.max_epochs=1"], tmp_path / "part"))
    resumed = train.run(compose_cfg("train", [*small, "trainer.max_epochs=2", f"trainer.resume={tmp_path / 'part'}"],
                                    tmp_path / "resumed"))
    assert resumed["resumed_at_epoch"] == 1 and resumed["epochs"] == 2
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # Gumbel noise included


def test_l2x_method_errors(black_box, tmp_path):
    from xai_bench.attribution.l2x import L2X
    from xai_bench.models import load_checkpoint

    model = load_checkpoint(black_box)
    with pytest.raises(ValueError, match="train.py task=l2x"):
        L2X(model, path=None)
    with pytest.raises(ValueError, match="no model.json"):
        L2X(model, path=str(tmp_path))
    with pytest.raises(ValueError, match="not an L2X explainer"):
        L2X(model, path=str(black_box))


def test_l2x_network_subset_sampling():
    from xai_bench.models.l2x import l2x

    torch.manual_seed(0)
    model = l2x(num_classes=3, in_chans=3, input_size=16, k=3, patch_size=4)
    net = model.net
    logits = torch.randn(5, 16)
    net.eval()
    hard = net.subset(logits)
    assert torch.equal(hard.sum(1), torch.full((5,), 3.0))
    assert torch.equal(hard.bool(), torch.zeros_like(hard).scatter(1, logits.topk(3, 1).indices, 1.0).bool())
    net.train()
    soft = net.subset(logits)
    assert ((soft >= 0) & (soft <= 1)).all() and (soft.sum(1) <= 3 + 1e-5).all() and (soft.sum(1) >= 1 - 1e-5).all()
    with pytest.raises(ValueError, match="divisible"):
        l2x(num_classes=3, in_chans=3, input_size=18, patch_size=4)

"""The README's "Extending" promise, proved from outside the package: a new attribution method is one Python file +
one YAML file, with no edit anywhere in xai_bench/ or conf/. Also Captum's hook-removal contract for every method."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.attribution.base import method_facts
from xai_bench.attribution.runner import build_attribution
from xai_bench.models.base import ImageClassifier
from xai_bench.tasks import explain

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

TOY_METHOD = '''
import torch
from xai_bench.attribution.base import AttributionMethod


class CentreBias(AttributionMethod):
    """A toy method: the input times a centred Gaussian, scaled by the target's logit sign."""

    signed = True
    figure = "overlay"

    def attribute(self, inputs, target=None, width=0.25):
        n, c, h, w = inputs.shape
        ys = torch.linspace(-1, 1, h, device=inputs.device).view(1, 1, h, 1)
        xs = torch.linspace(-1, 1, w, device=inputs.device).view(1, 1, 1, w)
        bump = torch.exp(-(xs ** 2 + ys ** 2) / (2 * width ** 2))
        sign = self.forward_func(inputs).gather(1, target.view(-1, 1)).sign().view(n, 1, 1, 1)
        return inputs * bump * sign
'''

TOY_YAML = '''# @package attribution.centre_bias
name: centre_bias
method:
  _target_: toy_method.CentreBias
  _partial_: true
kwargs:
  width: 0.3
'''


def test_a_method_is_one_file_plus_one_yaml(tmp_path, monkeypatch, compose):
    """Register a toy method from the test itself (its own module + its own conf folder) and run explain.py on it."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "toy_method.py").write_text(textwrap.dedent(TOY_METHOD))
    (tmp_path / "conf" / "attribution").mkdir(parents=True)
    (tmp_path / "conf" / "attribution" / "centre_bias.yaml").write_text(TOY_YAML)
    monkeypatch.syspath_prepend(str(code))

    cfg = compose("explain", [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "attribution=[saliency,centre_bias]",
                              "dataset=synthetic_shapes", "dataset.n_train=8", "dataset.n_val=8", "dataset.n_test=8",
                              "model=small_cnn", "max_images=2", "logger=none", "progress=false"], tmp_path / "run")
    metrics = explain.run(cfg)
    assert metrics["methods"] == ["saliency", "centre_bias"]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "ok"
    from toy_method import CentreBias  # the facts the run used came from the class

    facts = method_facts(CentreBias, cfg.attribution.centre_bias)
    assert facts.signed and facts.figure == "overlay" and not facts.forward_only
    assert explain.is_signed(cfg.attribution.centre_bias) and not explain.is_signed(cfg.attribution.saliency)


# ---------------------------------------------------------------------------------------------------------------
# Hook removal (Captum's tests/attr/test_hook_removal.py): a method that raises half-way must leave no hook behind.
class _Bomb(nn.Module):
    """Identity that counts its calls and raises on the ``arm_at``-th (counting from 1; ``None``: never)."""

    def __init__(self, arm_at: int | None) -> None:
        super().__init__()
        self.arm_at, self.calls = arm_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.arm_at is not None and self.calls >= self.arm_at:
            raise RuntimeError("boom")
        return x


def _bomb_model(arm_at: int | None) -> ImageClassifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), _Bomb(arm_at), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    return ImageClassifier(net, num_classes=3, input_size=(3, 16, 16), default_layer="net.3")


def _hooks(model: nn.Module) -> list[str]:
    found = []
    for name, m in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if getattr(m, kind, None):
                found.append(f"{name or '<root>'}.{kind}")
    return found


ATTRIBUTION_YAMLS = sorted((CONF_DIR / "attribution").glob("*.yaml"))


def _vit_hooks_removed_when_model_raises(node) -> None:
    """ViT-only methods (``requires = "vit"``): a ViT whose head raises, after every attention block has run."""
    from xai_bench.models import create_model
    from xai_bench.models.vit import attention_modules

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = create_model("vit_tiny_shapes", num_classes=3, input_size=16)
    flags = [m.fused_attn for m in attention_modules(model.net)]
    model.net.head = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        build_attribution(node, model).attribute(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))
    assert _hooks(model) == [] and [m.fused_attn for m in attention_modules(model.net)] == flags
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("path", ATTRIBUTION_YAMLS, ids=lambda p: p.stem)
def test_hooks_removed_when_method_raises(path, attribution_node):
    """The forward pass raises at its first, middle and last call of a clean run: no hook may stay behind and the
    caller's train/eval flags come back."""
    node = attribution_node(path.stem)
    from hydra.utils import get_class

    if getattr(get_class(node.method._target_), "requires", None) == "vit":
        return _vit_hooks_removed_when_model_raises(node)
    for key, value in {"n_steps": 2, "n_samples": 4, "n_masks": 8, "internal_batch_size": 4}.items():
        if node.get("kwargs") and key in node.kwargs:
            node.kwargs[key] = value
    if node.get("wrapper"):
        node.wrapper = OmegaConf.merge(node.wrapper, {"nt_samples": 2})
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    background = torch.rand(4, 3, 16, 16) if node.get("baseline") == "data" else None  # explain.py: training images
    if str(node.method.get("_target_")).endswith(".L2X") and not node.method.get("path"):
        from conftest import untrained_l2x

        node.method.path = untrained_l2x(3, 16)
    clean = _bomb_model(None)
    build_attribution(node, clean, background=background).attribute(x, t)
    n = clean.net[5].calls  # 0 for reference maps that never call the model (random, Sobel): nothing to arm
    assert _hooks(clean) == []
    for arm_at in sorted({1, (n + 1) // 2, n} if n else set()):
        model = _bomb_model(arm_at)
        with pytest.raises(RuntimeError, match="boom"):
            build_attribution(node, model, background=background).attribute(x, t)
        assert _hooks(model) == [], f"{path.stem} left hooks behind after raising at call {arm_at}/{n}"
        # the model was in train mode; attribute() evaluates in eval mode and must give the flags back
        assert all(m.training for m in model.modules()), f"{path.stem} left the model in eval mode"

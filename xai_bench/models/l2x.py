"""The L2X explainer network (Chen et al., "Learning to Explain: An Information-Theoretic Perspective on Model
Interpretation", ICML 2018), registered as the model ``l2x`` so that it trains, checkpoints and resumes with the
ordinary training loop (``python train.py task=l2x``, :mod:`xai_bench.tasks.l2x`).

Two parts: a *selector* that scores every ``patch_size``² patch of the image, and an *approximator* that must
predict the explained model's class from the ``k`` selected patches alone (the rest set to the mean image, 0 after
normalisation). Training samples the k-subset with the paper's continuous relaxation — k independent Gumbel-softmax
(Concrete) draws over the patches, combined by an element-wise max — so gradients reach the selector; in eval mode
the k highest-scoring patches are kept exactly, and the approximator's accuracy is L2X's "post-hoc accuracy".
Nothing here is taken from a library: no maintained PyTorch L2X exists (OmniXAI's is TensorFlow/PyTorch code inside
a large toolkit), and the network is ~60 lines.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_bench.models.base import ImageClassifier
from xai_bench.models.zoo import MODELS, _meta

__all__ = ["L2XNet", "l2x"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU())


class L2XNet(nn.Module):
    """Selector + approximator; ``forward`` returns the approximator's logits on the masked image.

    Args:
        num_classes: classes of the explained model.
        in_chans, input_size: image channels and side (divisible by ``patch_size``).
        k: patches kept. patch_size: patch side in pixels. tau: Gumbel-softmax temperature. width: channels.
    """

    def __init__(self, num_classes: int, in_chans: int, input_size: int, k: int, patch_size: int, tau: float,
                 width: int) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"l2x: input_size {input_size} must be divisible by patch_size {patch_size}")
        self.k, self.patch_size, self.tau = int(k), int(patch_size), float(tau)
        self.grid = input_size // patch_size
        if not 1 <= self.k < self.grid ** 2:
            raise ValueError(f"l2x: k={k} must lie in [1, {self.grid ** 2 - 1}] ({self.grid}×{self.grid} patches)")
        self.selector = nn.Sequential(_block(in_chans, width), _block(width, width),
                                      nn.Conv2d(width, 1, patch_size, stride=patch_size))  # N×1×g×g patch scores
        # the approximator must recognise an object from a few patches: three conv blocks, like small_cnn
        self.approximator = nn.Sequential(_block(in_chans, width), nn.MaxPool2d(2), _block(width, 2 * width),
                                          nn.MaxPool2d(2), _block(2 * width, 2 * width), nn.AdaptiveMaxPool2d(1),
                                          nn.Flatten(), nn.Linear(2 * width, num_classes))

    def scores(self, x: Tensor) -> Tensor:
        """N×P patch logits (P = grid², row-major)."""
        return self.selector(x).flatten(1)

    def subset(self, logits: Tensor) -> Tensor:
        """N×P mask over patches: relaxed k-hot sample in training, exact top-k otherwise."""
        if self.training:
            u = torch.rand((self.k, *logits.shape), device=logits.device).clamp_(1e-10, 1 - 1e-10)
            gumbel = -torch.log(-torch.log(u))
            return F.softmax((logits.unsqueeze(0) + gumbel) / self.tau, dim=-1).amax(0)
        top = logits.topk(self.k, dim=1).indices
        return torch.zeros_like(logits).scatter_(1, top, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.subset(self.scores(x)).view(-1, 1, self.grid, self.grid)
        mask = F.interpolate(mask, scale_factor=self.patch_size, mode="nearest")
        return self.approximator(x * mask)


@MODELS.register("l2x")
def l2x(num_classes: int, in_chans: int = 3, input_size: int = 32, k: int = 4, patch_size: int = 4,
        tau: float = 0.5, width: int = 32, **meta: Any) -> ImageClassifier:
    """An :class:`L2XNet` in pixel space (normalised with mean 0.5 / std 0.5 like ``small_cnn``)."""
    net = L2XNet(num_classes, in_chans, input_size, k, patch_size, tau, width)
    arch = {"name": "l2x", "num_classes": num_classes, "in_chans": in_chans, "input_size": input_size, "k": k,
            "patch_size": patch_size, "tau": tau, "width": width}
    return ImageClassifier(net, num_classes=num_classes, input_size=(in_chans, input_size, input_size), name="l2x",
                           arch=arch, fixed_input_size=True,
                           **_meta(meta, mean=(0.5,) * in_chans, std=(0.5,) * in_chans))


def load_l2x(path: str) -> ImageClassifier:
    """The L2X explainer saved by ``train.py task=l2x`` in ``path`` (its ``best/`` folder: ``model.json`` +
    ``model.safetensors``; weights are never unpickled). Raises :class:`~xai_bench.errors.CheckpointError` naming
    the file when it is missing or holds another model."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from xai_bench.errors import CheckpointError
    from xai_bench.models.checkpoint import SPEC, WEIGHTS

    folder = Path(path).expanduser()
    spec_path, weights = folder / SPEC, folder / WEIGHTS
    if not spec_path.is_file() or not weights.is_file():
        raise CheckpointError(f"attribution.l2x.method.path={path}: no {SPEC} + {WEIGHTS} there; train an L2X "
                              f"explainer first (python train.py task=l2x model=checkpoint model.path=<run>/best) "
                              f"and point at its best/ folder")
    try:
        spec = json.loads(spec_path.read_text())
        arch = dict(spec["arch"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{spec_path} is corrupt ({type(exc).__name__}: {exc})") from None
    if arch.pop("name", None) != "l2x":
        raise CheckpointError(f"{spec_path} holds a {spec.get('name')!r} model, not an L2X explainer; point "
                              f"attribution.l2x.method.path at the best/ folder of a train.py task=l2x run")
    model = l2x(**arch, mean=spec.get("mean"), std=spec.get("std"), class_names=spec.get("class_names"))
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit the L2X network in {spec_path}: {exc}") from None
    return model.eval()

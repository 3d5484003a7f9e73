"""The model contract: every classifier takes N×C×H×W images in [0, 1] and normalises inside (RobustBench style)."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import torch
from torch import nn

from xai_bench.registry import unknown_name_message

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """Wraps a network so that it speaks pixel space.

    Attacks (ε in pixel units), corruptions and attribution methods all work on the same [0, 1] tensor, and a figure
    can draw exactly what was explained.

    Args:
        net: the underlying network, fed normalised images.
        num_classes: number of output logits.
        input_size: ``(C, H, W)`` the network expects.
        mean, std: per-channel normalisation applied inside ``forward``.
        class_names: one name per class (defaults to ``"0" … "K-1"``).
        default_layer: dotted module name (relative to this wrapper, e.g. ``"net.layer4"``) that Grad-CAM-style
            methods use when none is given.
        resize_size: eval-time resize of the shorter side before the centre crop to ``input_size`` (``None`` resizes
            straight to ``input_size``).
        name: architecture name, recorded in checkpoints.
        arch: everything needed to rebuild ``net`` (stored in checkpoint JSON).
        fixed_input_size: the network only accepts ``input_size`` (e.g. a flatten before a dense layer), so data of
            another size is an error rather than something global pooling absorbs.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        num_classes: int,
        input_size: Sequence[int] = (3, 224, 224),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        class_names: Sequence[str] | None = None,
        default_layer: str | None = None,
        resize_size: int | None = None,
        name: str = "model",
        arch: dict[str, Any] | None = None,
        fixed_input_size: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        c = int(input_size[0])
        mean = list(mean) * c if len(mean) == 1 else list(mean)
        std = list(std) * c if len(std) == 1 else list(std)
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values but the model has {c} input channels")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1), persistent=False)
        self.num_classes = int(num_classes)
        self.input_size = tuple(int(v) for v in input_size)
        names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names given for a model with {num_classes} classes")
        self.class_names = names
        self.default_layer = default_layer
        self.resize_size = resize_size
        self.name = name
        self.arch = dict(arch or {})
        self.fixed_input_size = fixed_input_size
        if default_layer is not None:
            self.get_layer(default_layer)  # fail early on a wrong name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def get_layer(self, name: str | None = None) -> nn.Module:
        """The module called ``name`` (default: ``default_layer``); unknown names list the valid ones."""
        name = name or self.default_layer
        if name is None:
            raise ValueError(f"model {self.name!r} has no default layer; pass a layer name, e.g. one of "
                             f"{self.conv_layer_names()[-5:]}")
        modules = dict(self.named_modules())
        if name not in modules:
            raise KeyError(unknown_name_message("layer", name, [n for n in modules if n],
                                                f" Convolutional layers: {self.conv_layer_names()[-8:]}"))
        return modules[name]

    def conv_layer_names(self) -> list[str]:
        return [n for n, m in self.named_modules() if isinstance(m, nn.Conv2d)]

    def spec(self) -> dict[str, Any]:
        """JSON-able description, saved beside checkpoint weights."""
        return {
            "name": self.name,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "class_names": self.class_names,
            "default_layer": self.default_layer,
            "resize_size": self.resize_size,
        }

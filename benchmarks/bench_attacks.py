"""Cost of ε sweeps: forward/backward counts and wall time of FGSM sweep vs separate FGSM calls vs PGD per ε.

    python benchmarks/bench_attacks.py                 # small CNN 32×32 and resnet18 64×64, batch 128
    python benchmarks/bench_attacks.py --models cnn --batch 32 --device cpu

The FGSM sweep should cost one forward+backward plus one forward per non-zero ε; K separate calls cost K
forward+backward passes plus the K scoring forwards; PGD-s costs s forward+backward passes plus one scoring forward
per non-zero ε. Weights are random: this measures cost, not robustness.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

import xai_bench  # noqa: F401  (must precede torchvision, see xai_bench._compat)
from xai_bench.robustness.attacks import FGSM, PGD, parse_eps
from xai_bench.models.base import ImageClassifier
from xai_bench.utils import resolve_device, seed_everything

EPS = parse_eps([0, "0.5/255", "1/255", "2/255", "4/255", "8/255", "16/255"])


class Counted(nn.Module):
    """Counts forward calls and backward passes through the logits (a hook on the output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_classes = getattr(model, "num_classes", None)
        self.forwards = 0
        self.backwards = 0

    def _on_backward(self, grad: Tensor) -> None:
        self.backwards += 1

    def forward(self, x: Tensor) -> Tensor:
        self.forwards += 1
        out = self.model(x)
        if out.requires_grad:
            out.register_hook(self._on_backward)
        return out

    def reset(self) -> None:
        self.forwards = self.backwards = 0


def small_cnn(num_classes: int = 10) -> ImageClassifier:
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, num_classes),
    )
    return ImageClassifier(net, num_classes=num_classes, input_size=(3, 32, 32), name="small_cnn")


def resnet18_64(num_classes: int = 10) -> ImageClassifier:
    from torchvision.models import resnet18

    return ImageClassifier(resnet18(weights=None, num_classes=num_classes), num_classes=num_classes,
                           input_size=(3, 64, 64), name="resnet18")


def _separate_fgsm(attack: FGSM, model: nn.Module, x: Tensor, y: Tensor) -> None:
    for eps in EPS:
        adv = attack(x, y, eps)
        if eps != 0:  # score like the sweep does (it reuses the clean logits at ε = 0)
            with torch.no_grad():
                model(adv)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet18"], choices=["cnn", "resnet18"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    seed_everything(0)
    rows = []
    for name in args.models:
        base = (small_cnn() if name == "cnn" else resnet18_64()).to(device).eval()
        model = Counted(base)
        c, h, w = base.input_size
        x = torch.rand(args.batch, c, h, w, device=device)
        y = torch.randint(0, base.num_classes, (args.batch,), device=device)
        FGSM(model)(x[:2], y[:2], 1 / 255)  # warm-up (allocator, kernels)
        fgsm, pgd = FGSM(model), PGD(model, steps=args.pgd_steps, seed=0)
        cases = [
            ("FGSM sweep", partial(fgsm.sweep, x, y, EPS)),
            (f"FGSM x{len(EPS)} calls", partial(_separate_fgsm, fgsm, model, x, y)),
            (f"PGD-{args.pgd_steps} sweep", partial(pgd.sweep, x, y, EPS)),
        ]
        for method, fn in cases:
            model.reset()
            seconds = _timed(fn, device)
            rows.append((f"{name} {h}x{w}", method, len(EPS), model.forwards, model.backwards, seconds))

    header = ("model", "method", "K", "forwards", "backwards", "seconds")
    print(f"device: {device}, batch {args.batch}, eps = {', '.join(f'{e * 255:g}/255' for e in EPS)}")
    print(f"| {' | '.join(header)} |")
    print(f"|{'|'.join('---' for _ in header)}|")
    for model_name, method, k, fwd, bwd, sec in rows:
        print(f"| {model_name} | {method} | {k} | {fwd} | {bwd} | {sec:.3f} |")


if __name__ == "__main__":
    main()

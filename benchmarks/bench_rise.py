"""How close RISE gets to its floor: N masks vs exactly N images of plain batched forward passes.

RISE on one image with N masks needs N forward passes; everything else (mask generation, upsampling, scoring,
accumulation) is overhead. The ratio column is RISE time / forward time, so 1.0 means no overhead.

    python benchmarks/bench_rise.py                   # small CNN @ 64×64 and resnet18 @ 224×224, N = 500, 2000
    python benchmarks/bench_rise.py --device cuda --n 2000 8000 --batch-size 256
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import xai_bench  # noqa: F401  (must precede torchvision)
from xai_bench.attribution import RISE
from xai_bench.batching import default_batch_size
from xai_bench.utils import resolve_device


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, num_classes),
    )


def resnet18() -> nn.Module:
    from torchvision.models import resnet18 as build

    return build(num_classes=1000)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forwards(model: nn.Module, n: int, size: int, batch_size: int, device: torch.device) -> float:
    batch = torch.rand(batch_size, 3, size, size, device=device)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch_size):
            model(batch[: min(batch_size, n - i)])
    _sync(device)
    return time.perf_counter() - start


def time_rise(model: nn.Module, n: int, size: int, batch_size: int, device: torch.device) -> float:
    x = torch.rand(1, 3, size, size, device=device)
    rise = RISE(model)
    _sync(device)
    start = time.perf_counter()
    rise.attribute(x, target=0, n_masks=n, batch_size=batch_size, seed=0)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--n", type=int, nargs="+", default=[500, 2000], help="numbers of masks")
    parser.add_argument("--batch-size", type=int, default=None, help="default: default_batch_size(...)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timings are the minimum over this many interleaved runs (shared machines are noisy)")
    parser.add_argument("--models", nargs="+", default=["small_cnn", "resnet18"], choices=["small_cnn", "resnet18"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    specs = {"small_cnn": (small_cnn, 64), "resnet18": (resnet18, 224)}

    rows = []
    for name in args.models:
        build, size = specs[name]
        model = build().to(device).eval()
        batch_size = args.batch_size or default_batch_size(model, (3, size, size), device)
        time_forwards(model, batch_size, size, batch_size, device)  # warm-up (allocator, cuDNN autotune)
        time_rise(model, min(64, batch_size), size, batch_size, device)
        for n in args.n:
            t_fwd, t_rise = math.inf, math.inf
            for _ in range(max(1, args.repeats)):  # interleaved, so load changes hit both columns alike
                t_fwd = min(t_fwd, time_forwards(model, n, size, batch_size, device))
                t_rise = min(t_rise, time_rise(model, n, size, batch_size, device))
            rows.append((name, n, f"{size}x{size}", batch_size, t_rise, t_fwd, t_rise / t_fwd))
            print(f"  done {name} N={n}", flush=True)

    print(f"\ndevice: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"| {'model':<9} | {'N':>5} | {'input':>7} | {'batch':>5} | {'RISE s':>7} | {'N-forward s':>11} | "
          f"{'ratio':>5} |")
    print(f"|{'-' * 11}|{'-' * 7}|{'-' * 9}|{'-' * 7}|{'-' * 9}|{'-' * 13}|{'-' * 7}|")
    for name, n, size, bs, t_rise, t_fwd, ratio in rows:
        print(f"| {name:<9} | {n:>5} | {size:>7} | {bs:>5} | {t_rise:>7.2f} | {t_fwd:>11.2f} | {ratio:>5.2f} |")


if __name__ == "__main__":
    main()

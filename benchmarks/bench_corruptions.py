"""Time every corruption on one batch: ms per batch at ImageNet-C severity 3 and for the basic suite.

    python benchmarks/bench_corruptions.py --batch 64 --size 224 --device all
"""

from __future__ import annotations

import argparse
import time

import torch

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.robustness import corruptions as C


def _time(fn, x: torch.Tensor, repeat: int) -> float:
    fn(x)  # warm-up (kernels, allocator, Pillow)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (cpu plus cuda when available)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per corruption (median reported)")
    parser.add_argument("--pattern", default="*", help="fnmatch filter on corruption names")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    if not devices:
        raise SystemExit(f"device {args.device!r} is not available")

    node = lambda fn, **kw: {"_target_": f"xai_bench.robustness.corruptions.{fn}", "_partial_": True, **kw}
    basic = C.build_suite({"custom": {
        "contrast_x5": node("contrast", factor=5),
        "blur_r10": node("gaussian_blur", radius=10),
        "invert": node("invert"),
        "brightness_up0_3": node("brightness", delta=0.3),
        "noise_std0_1": node("gaussian_noise", std=0.1),
        "jpeg_q10": node("jpeg", quality=10),
        "pixelate_x8": node("pixelate", factor=8),
        "rotate_30": node("rotate", degrees=30),
    }, "seed": 0})
    rows: dict[str, dict[str, float]] = {}
    for device in devices:
        x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
        for name in C.list_corruptions(args.pattern):
            fn = C.SeededCorruption(lambda x, generator=None, name=name: C.CORRUPTIONS.get(name)(
                x, args.severity, generator=generator), seed=0)
            rows.setdefault(f"{name}/{args.severity}", {})[device] = _time(fn, x, args.repeat)
        if args.pattern == "*":
            for label, fn in basic.items():
                rows.setdefault(label, {})[device] = _time(fn, x, args.repeat)

    print(f"ms per batch of {args.batch}×3×{args.size}×{args.size} at severity {args.severity} "
          f"(median of {args.repeat}; {torch.get_num_threads()} CPU threads)")
    header = f"{'corruption':<24}" + "".join(f"{d:>12}" for d in devices)
    print(header)
    print("-" * len(header))
    for label, t in rows.items():
        print(f"{label:<24}" + "".join(f"{t.get(d, float('nan')):>12.1f}" for d in devices))


if __name__ == "__main__":
    main()

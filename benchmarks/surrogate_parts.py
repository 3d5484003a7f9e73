"""Where a LIME / Kernel SHAP call spends its time in the benchmark's overhead regime (small CNN at 32², one image per
call, 256 samples): timers around SLIC, the coalition draw, the model's forward passes, the similarity weights and the
surrogate fit; "rest" is everything else (building the perturbed copies, the explainer's checks).

    python benchmarks/surrogate_parts.py            # both methods, best of 5 rounds of 8 images
    python benchmarks/surrogate_parts.py --methods lime --rounds 10
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

import xai_bench  # noqa: F401  (must precede torchvision)
import xai_bench.attribution.runner as runner
import xai_bench.attribution.surrogate as surrogate
from benchlib.operations import load_method
from run import build_model, regime_images
from xai_bench.accel import keep_freed_cpu_memory


def parts(name: str, rounds: int, n_images: int = 8, n_samples: int = 256) -> tuple[float, dict[str, float]]:
    """Best total seconds per image over ``rounds`` and the parts of that round (seconds per image)."""
    model, _ = build_model("small_cnn", 32)
    model.eval()
    x = regime_images("overhead", n_images, 32)
    with torch.no_grad():
        t = model(x).argmax(1)
    cfg = load_method(name)
    cfg.kwargs.n_samples = n_samples
    ex = runner.build_attribution(cfg, model)
    acc: dict[str, float] = collections.defaultdict(float)
    patches = []

    def timer(obj: object, attr: str, label: str) -> None:
        f = getattr(obj, attr)

        @functools.wraps(f)
        def timed(*a: object, **k: object) -> object:
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[label] += time.perf_counter() - t0

        patches.append((obj, attr, f))
        setattr(obj, attr, timed)

    timer(runner, "segment", "SLIC")
    timer(surrogate._BatchedLimeBase, "_draw", "draw")
    timer(surrogate._BatchedLimeBase, "_weights_at_once", "weights")  # LIME's and Kernel SHAP's kernels
    timer(surrogate._BatchedLimeBase, "_weights_per_sample", "weights")  # any other kernel
    timer(ex.method.interpretable_model, "fit", "surrogate fit")
    timer(model, "forward", "model forward")
    try:
        def one_round() -> float:
            t0 = time.perf_counter()
            for i in range(n_images):
                ex.attribute(x[i:i + 1], t[i:i + 1])
            return time.perf_counter() - t0

        one_round()  # warm-up
        best, best_parts = float("inf"), {}
        for _ in range(rounds):
            acc.clear()
            total = one_round()
            if total < best:
                best, best_parts = total, dict(acc)
    finally:
        for obj, attr, f in reversed(patches):
            setattr(obj, attr, f)
    best_parts["rest"] = best - sum(best_parts.values())
    return best / n_images, {k: v / n_images for k, v in best_parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="lime,kernel_shap")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_cpu_memory()  # as the benchmark runner and the tasks do
    order = ["model forward", "SLIC", "surrogate fit", "weights", "draw", "rest"]
    print("| method | ms per image | " + " | ".join(order) + " |")
    print("|---|---:|" + "---:|" * len(order))
    for name in args.methods.split(","):
        total, p = parts(name, args.rounds)
        print(f"| {name} | {total * 1e3:.2f} | " + " | ".join(f"{p.get(k, 0) * 1e3:.2f}" for k in order) + " |")


if __name__ == "__main__":
    main()

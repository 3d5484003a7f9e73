"""One benchmark run: selected operations in two regimes, next to their peers and the model's own roofline.

Regimes: ``compute`` (a ResNet at 224², the model's arithmetic dominates) and ``overhead`` (a small CNN at 32², many
single images, where Python and library overhead dominate). For each operation the table gives our time, the passes
through the model, the efficiency against the roofline measured in the same run (best batch size and memory format
for forward and forward+backward), the peer's time, the speed-up, peak memory, device, versions and date; the
quality-per-cost curve (insertion AUC vs forward passes for RISE, Occlusion, LIME) goes beside it as a PNG.

    python benchmarks/run.py                                   # quick mode, CPU: a few minutes
    python benchmarks/run.py mode=full device=cuda amp=true    # GPU
    python benchmarks/run.py 'ops=[occlusion,rise]' 'regimes=[overhead]' quality=false

Peers: ``pip install -e '.[bench]'`` and ``pip install --no-deps torchattacks==3.5.1``; a missing one is skipped with
a note in its row. Writes ``<out_dir>/bench.md``, ``bench.json`` and ``quality_per_cost.png``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, bench_metrics

import xai_bench  # noqa: F401  (must precede torchvision)
from benchlib.operations import OPERATIONS, Context, derive
from benchlib.report import environment, markdown
from benchlib.timing import BatchFloor, Counted, leftover_hooks, measure_roofline
from xai_bench.accel import compile_model, keep_freed_cpu_memory
from xai_bench.batching import default_batch_size
from xai_bench.models import create_model
from xai_bench.utils import resolve_device, seed_everything

log = logging.getLogger("benchmarks.run")
REGIMES = ("overhead", "compute")


def build_model(name: str, size: int) -> tuple[torch.nn.Module, int]:
    """The regime's model with random weights (cost does not depend on them): ``(model, num_classes)``."""
    if name == "small_cnn":
        return create_model("small_cnn", num_classes=10, in_chans=3, input_size=size), 10
    return create_model("torchvision", arch=name, num_classes=1000, input_size=size), 1000


def regime_images(name: str, n: int, size: int) -> torch.Tensor:
    """Real structure for the segmenting methods (SLIC finds one segment on noise): photos at 224², shapes at 32²."""
    if size >= 64:
        import bench_metrics

        return bench_metrics.photos(n, size)
    from xai_bench.data.synthetic import make_shapes

    return make_shapes(max(n, 1), size, seed=0)["image"][:n].float()


def run_regime(cfg: DictConfig, name: str, device: torch.device) -> dict[str, Any]:
    rc = cfg.regime[name]
    base, _ = build_model(rc.model, int(rc.size))
    base = base.to(device).eval()
    model = Counted(compile_model(base, enabled=bool(cfg.compile)) if cfg.compile else base)
    size = int(rc.size)
    # the batch size our operations start from is always a candidate, so efficiency compares like with like
    sizes = {int(b) for b in rc.batch_sizes}
    if cfg.roofline_default_batch:
        sizes.add(default_batch_size(base, (3, size, size), device))
    sizes = sorted(sizes)
    roof = measure_roofline(model.inner, (3, size, size), sizes, device, amp=cfg.amp)
    log.info("%s regime: %s at %d², roofline over batch sizes %s", name, rc.model, size, sizes)
    n_needed = max(int(rc.images), 1)
    images = regime_images(name, n_needed, size).to(device)
    with torch.no_grad():
        targets = model.inner(images).argmax(1)
    ctx = Context(regime=name, model=model, images=images, targets=targets, device=device, sizes=rc, roofline=roof,
                  batch_floor=BatchFloor(model.inner, (3, size, size), device, amp=bool(cfg.amp)),
                  repeats=int(cfg.repeats), peers=bool(cfg.peers), amp=bool(cfg.amp))
    rows = []
    for op in cfg.ops:
        if op not in OPERATIONS:
            raise SystemExit(f"ops: unknown operation {op!r}; valid: {', '.join(OPERATIONS)}")
        log.info("  %s / %s", name, op)
        seed_everything(int(cfg.seed))
        row = OPERATIONS[op](ctx)
        left = leftover_hooks(model)
        if left:  # a hook left behind slows every later operation (and the roofline no longer applies)
            raise RuntimeError(f"operation {op!r} left hooks on the model: {left}; release them in the operation")
        eff = row.get("efficiency")
        log.info("    ours %s s, efficiency %s, peer %s s", _s(row.get("ours_s")), _s(eff), _s(row.get("peer_s")))
        rows.append(row)
        if cfg.roofline_every_op:
            # the model's floor measured again after every operation, the best time kept: one measurement taken in
            # a slow spell of a shared machine would otherwise shift every efficiency of the regime
            ctx.roofline = ctx.roofline.best(measure_roofline(model.inner, (3, size, size), sizes, device,
                                                              amp=cfg.amp))
            ctx.batch_floor.refresh()
    if cfg.roofline_every_op:
        rows = [derive(r, ctx.roofline, ctx.batch_floor) for r in rows]
        log.info("  best roofline seen: forward %.3g ms/image, forward+backward %.3g ms/image (start: %.3g, %.3g)",
                 ctx.roofline.fwd_s * 1e3, ctx.roofline.fwdbwd_s * 1e3, roof.fwd_s * 1e3, roof.fwdbwd_s * 1e3)
    return {"model": rc.model, "size": size, "batch_sizes": sizes, "roofline": vars(ctx.roofline),
            "roofline_at_start": vars(roof), "rows": rows}


def _s(v: Any) -> str:
    return "—" if v is None else f"{v:.3g}"


@hydra.main(version_base=None, config_path="conf", config_name="run")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the benchmark described by ``cfg`` (``benchmarks/conf/run.yaml``); returns what ``bench.json`` holds."""
    bad = [r for r in cfg.regimes if r not in REGIMES]
    if bad:
        raise SystemExit(f"regimes: unknown {bad}; valid: {list(REGIMES)}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    # as every task does (xai_bench.distributed.setup_job); process-wide, so the peers get it too
    kept = keep_freed_cpu_memory() if cfg.keep_freed_memory else False
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"mode": cfg.mode_name, "amp": bool(cfg.amp), "compile": bool(cfg.compile),
                              "repeats": int(cfg.repeats), "keep_freed_memory": kept,
                              "environment": environment(device),
                              "config": OmegaConf.to_container(cfg, resolve=True), "regimes": {}}
    for name in cfg.regimes:
        result["regimes"][name] = run_regime(cfg, name, device)
    if cfg.quality:
        from benchlib.quality import plot, quality_per_cost

        log.info("quality per cost")
        seed_everything(int(cfg.seed))
        q = quality_per_cost(cfg.quality_cfg, device)
        q["figure"] = str(plot(q, out / "quality_per_cost.png"))
        result["quality"] = q
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "bench.md").write_text(markdown(result))
    log.info("wrote %s and %s", out / "bench.md", out / "bench.json")
    return result


if __name__ == "__main__":
    main()

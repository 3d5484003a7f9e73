"""The benchmark's Markdown and JSON tables."""

from __future__ import annotations

import datetime
import platform
from typing import Any

import torch


def environment(device: torch.device) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("captum", "torchvision", "lime", "grad-cam", "torchattacks", "imagecorruptions", "quantus"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                             platform.machine())
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"{device.type}: {name}", "threads": torch.get_num_threads(), "versions": versions}


def _setting(node: dict[str, Any]) -> str:
    flat = {**{k: v for k, v in node.items() if k != "kwargs"}, **node.get("kwargs", {})}
    return ", ".join(f"{k}={v}" for k, v in flat.items())


def _f(v: Any, spec: str) -> str:
    return "—" if v is None or v != v else format(v, spec)


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"# xai-bench benchmark ({result['mode']} mode)", "",
             f"- date: {env['date']}", f"- device: {env['device']}, torch threads {env['threads']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
             f"- settings: amp={result['amp']}, compile={result['compile']}, repeats={result['repeats']}, "
             f"keep_freed_memory={result.get('keep_freed_memory')}", ""]
    for name, reg in result["regimes"].items():
        rf = reg["roofline"]
        lines += [f"## {name} regime: {reg['model']} at {reg['size']}²", "",
                  f"Roofline (best over batch sizes {reg['batch_sizes']} × NCHW/channels_last): forward "
                  f"{rf['fwd_s'] * 1e3:.2f} ms/image (batch {rf['fwd_batch']}, {rf['fwd_format']}), forward+backward "
                  f"{rf['fwdbwd_s'] * 1e3:.2f} ms/image (batch {rf['fwdbwd_batch']}, {rf['fwdbwd_format']}).", "",
                  "| operation | work | ours s | passes (fwd / fwd+bwd) | efficiency | = batch bound × | efficiency "
                  "at our batch sizes | peer | peer s | speed-up | speed-up bound | peak MB ours / peer | agreement | "
                  "note |",
                  "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|"]
        for r in reg["rows"]:
            if r.get("ours_s") is None:
                lines.append(f"| {r['operation']} | {r.get('work', '')} | — | — | — | — | — | — | — | — | — | — | — | "
                             f"{r.get('note', '')} |")
                continue
            passes = f"{r['fwd']} / {r['fwdbwd']}" if (r.get("fwd") or r.get("fwdbwd")) else "—"
            eff = _f(r.get("efficiency"), ".2f")
            speed = f"{r['speedup']:.1f}×" if r.get("speedup") else "—"
            bound = f"{r['speedup_bound']:.1f}×" if r.get("speedup_bound") else "—"
            mem = f"{_f(r.get('ours_peak_mb'), '.0f')} / {_f(r.get('peer_peak_mb'), '.0f')}"
            lines.append(f"| {r['operation']} | {r['work']} | {r['ours_s']:.3f} | {passes} | {eff} | "
                         f"{_f(r.get('batch_bound'), '.2f')} | {_f(r.get('efficiency_at_calls'), '.2f')} | "
                         f"{r.get('peer') or '—'} | {_f(r.get('peer_s'), '.3f')} | {speed} | {bound} | {mem} | "
                         f"{r.get('agreement', '')} | {r.get('note', '')} |")
        lines.append("")
    if result.get("quality"):
        q = result["quality"]
        lines += ["## Quality per cost: insertion AUC vs forward passes", "",
                  f"{q['model']}; {q['images']} images. Figure: `{q.get('figure', '')}`", "",
                  "| method | setting | passes / image | insertion AUC (± s.e. over images) |", "|---|---|---:|---:|"]
        for method, pts in q["curves"].items():
            for p in pts:
                lines.append(f"| {method} | {_setting(p['setting'])} | {p['passes_per_image']:.0f} | "
                             f"{p['insertion_auc']:.3f} ± {p['insertion_se']:.3f} |")
        lines.append("")
    lines += ["Efficiency = (forward images × best forward time per image + forward+backward images × best "
              "forward+backward time per image) / our time; speed-up = peer time / our time; speed-up bound = peer "
              "time / that roofline time, the most any implementation doing our passes could gain on the peer. "
              "Efficiency = batch bound × efficiency at our batch sizes: the batch bound is the roofline time over "
              "the bare model's time for exactly our calls (same batch sizes, best memory format), what those batch "
              "sizes allow (one image explained per call keeps a one-pass method far below 1); efficiency at our "
              "batch sizes is that call time over our time, our overhead beyond the model. Peak "
              "memory: CUDA allocated; on CPU the growth of the process's resident memory during the operation, a "
              "lower bound (memory the allocator already holds from earlier operations is not counted again).", ""]
    return "\n".join(lines)

"""Timers, pass counting, peak memory and the model's own roofline.

The roofline is the floor the model sets: the best per-image time of a plain forward pass (inference mode) and of a
forward+backward pass (gradient with respect to the input, as attribution methods take it), each the best over the
configured batch sizes and both memory formats (NCHW, channels_last). An operation that forwards ``F`` images and
forwards+backwards ``B`` images in ``t`` seconds has efficiency ``(F · t_fwd + B · t_fwdbwd) / t``: 1.0 means no
overhead beyond the model itself.

The roofline takes the best batch size; an operation that must call the model on small batches (one image explained
per call: Grad-CAM's single forward+backward) cannot reach it whatever its code does. :class:`BatchFloor` therefore
also times the bare model at exactly the batch sizes the operation used (the counted wrapper records every call's
batch size and grad mode), so efficiency splits into two factors: roofline / call floor (what those batch sizes
allow) × call floor / our time (our overhead beyond the model at those batch sizes).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.accel import channels_last_weights, fast_forward


class Counted(nn.Module):
    """Forwards to ``model`` and counts images: ``fwd`` without autograd, ``fwdbwd`` when the output needs a gradient.

    Every other attribute (``num_classes``, ``default_layer``, ``get_layer``, ``input_size``) is the wrapped model's,
    so explainers built on it find the same layers.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.fwd = 0
        self.fwdbwd = 0
        self.calls: dict[tuple[int, bool], int] = {}  # (batch size, with gradient) → number of calls

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        grad = bool(out.requires_grad)
        if grad:
            self.fwdbwd += x.shape[0]
        else:
            self.fwd += x.shape[0]
        key = (int(x.shape[0]), grad)
        self.calls[key] = self.calls.get(key, 0) + 1
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def reset(self) -> None:
        self.fwd = self.fwdbwd = 0
        self.calls = {}


def leftover_hooks(model: nn.Module) -> list[str]:
    """Modules of ``model`` that still carry forward/backward hooks (name: hook kinds)."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    out = []
    for name, module in model.named_modules():
        held = [k.strip("_") for k in kinds if getattr(module, k, None)]
        if held:
            out.append(f"{name or '<model>'}: {', '.join(held)}")
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _RssSampler:
    """Peak resident memory of this process above its level at start (Linux ``/proc``), sampled every 5 ms."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra(self) -> int:
        return max(0, self.peak - self.start)


@dataclass
class Timing:
    seconds: float
    peak_mb: float
    fwd: int = 0
    fwdbwd: int = 0
    value: Any = field(default=None, repr=False)
    calls: dict[tuple[int, bool], int] = field(default_factory=dict)  # the counted model's calls in one run


def timed(fn: Callable[[], Any], device: torch.device, *, repeats: int = 1, counted: Counted | None = None) -> Timing:
    """Best wall time of ``repeats`` calls of ``fn``, its peak memory (CUDA: allocated; CPU: RSS above the start)
    and the images the counted model saw in one call."""
    best, peak, value = math.inf, 0.0, None
    fwd = fwdbwd = 0
    calls: dict[tuple[int, bool], int] = {}
    for _ in range(max(1, repeats)):
        if counted is not None:
            counted.reset()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        sampler = _RssSampler() if device.type != "cuda" else contextlib.nullcontext()
        with sampler:
            sync(device)
            t0 = time.perf_counter()
            value = fn()
            sync(device)
            t = time.perf_counter() - t0
        if device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(device) - base
        else:
            mem = sampler.extra  # type: ignore[union-attr]
        best, peak = min(best, t), max(peak, mem / 2**20)
        if counted is not None:
            fwd, fwdbwd, calls = counted.fwd, counted.fwdbwd, dict(counted.calls)
    return Timing(best, peak, fwd, fwdbwd, value, calls)


@dataclass
class Roofline:
    fwd_s: float  # best seconds per image, forward
    fwd_batch: int
    fwd_format: str
    fwdbwd_s: float  # best seconds per image, forward + backward to the input
    fwdbwd_batch: int
    fwdbwd_format: str

    def floor(self, fwd: int, fwdbwd: int) -> float:
        return fwd * self.fwd_s + fwdbwd * self.fwdbwd_s

    def best(self, other: Roofline) -> Roofline:
        """The faster of two measurements, per pass kind (the model's floor is the least time it was seen to take)."""
        f = min((self.fwd_s, self.fwd_batch, self.fwd_format), (other.fwd_s, other.fwd_batch, other.fwd_format))
        b = min((self.fwdbwd_s, self.fwdbwd_batch, self.fwdbwd_format),
                (other.fwdbwd_s, other.fwdbwd_batch, other.fwdbwd_format))
        return Roofline(f[0], f[1], f[2], b[0], b[1], b[2])


def _pass_fns(model: nn.Module, x: Tensor, device: torch.device, amp: bool) -> tuple[Callable[[], None],
                                                                                Callable[[], None]]:
    """A bare forward pass (inference mode) and a forward+backward pass (gradient to the input) of ``x``."""
    def forward() -> None:
        with fast_forward(model, device, channels_last=False, amp=amp):
            model(x)

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        cast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" \
            else contextlib.nullcontext()
        with cast:
            out = model(xg)
        torch.autograd.grad(out[:, 0].sum(), xg)

    return forward, forward_backward


class BatchFloor:
    """The bare model's time for a given list of calls (batch size, with gradient): each distinct call timed once at
    its batch size, best of both memory formats, and cached for the regime."""

    def __init__(self, model: nn.Module, shape: tuple[int, int, int], device: torch.device, *, amp: bool = False,
                 repeats: int = 3) -> None:
        self.model, self.shape, self.device, self.amp, self.repeats = model, shape, device, amp, repeats
        self._seconds: dict[tuple[int, bool], float] = {}

    def call_seconds(self, batch: int, grad: bool) -> float:
        key = (batch, grad)
        if key not in self._seconds:
            self._seconds[key] = self._measure(batch, grad)
        return self._seconds[key]

    def refresh(self) -> None:
        """Time every call seen so far again and keep the faster time (see ``Roofline.best``)."""
        for (batch, grad), t in list(self._seconds.items()):
            self._seconds[(batch, grad)] = min(t, self._measure(batch, grad))

    def _measure(self, batch: int, grad: bool) -> float:
        x = torch.rand(batch, *self.shape, device=self.device)
        best = math.inf
        for channels_last in (False, True):
            with channels_last_weights(self.model, enabled=channels_last):
                fn = _pass_fns(self.model, x, self.device, self.amp)[int(grad)]
                fn()  # warm-up
                best = min(best, timed(fn, self.device, repeats=self.repeats).seconds)
        return best

    def floor(self, calls: dict[tuple[int, bool], int]) -> float:
        """Seconds the bare model needs for ``calls`` ((batch size, with gradient) → number of calls)."""
        return sum(n * self.call_seconds(b, g) for (b, g), n in calls.items())


def measure_roofline(model: nn.Module, shape: tuple[int, int, int], batch_sizes: list[int], device: torch.device,
                     *, repeats: int = 2, amp: bool = False) -> Roofline:
    """Best per-image forward and forward+backward time of ``model`` over ``batch_sizes`` × {NCHW, channels_last}."""
    fwd: list[tuple[float, int, str]] = []
    fwdbwd: list[tuple[float, int, str]] = []
    for bs in batch_sizes:
        x = torch.rand(bs, *shape, device=device)
        for fmt in ("nchw", "channels_last"):
            with channels_last_weights(model, enabled=fmt == "channels_last"):
                forward, forward_backward = _pass_fns(model, x, device, amp)
                for fn, rows in ((forward, fwd), (forward_backward, fwdbwd)):
                    fn()  # warm-up (allocator, kernel choice)
                    t = timed(fn, device, repeats=repeats).seconds
                    rows.append((t / bs, bs, fmt))
    f, b = min(fwd), min(fwdbwd)
    return Roofline(f[0], f[1], f[2], b[0], b[1], b[2])

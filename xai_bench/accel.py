"""Fast forward-only work: ``torch.inference_mode``, ``channels_last`` weights, bf16 autocast and ``torch.compile``.

Perturbation methods (Occlusion, Feature Ablation, RISE, LIME, Kernel SHAP) and the explanation metrics push
hundreds to thousands of perturbed images through a model and never take a gradient. Three things make those
forward passes cheaper without changing what they compute beyond float rounding:

- ``torch.inference_mode`` (no autograd bookkeeping at all; stricter and cheaper than ``no_grad``);
- ``channels_last`` weights for convolutional models (for gradient work too: :func:`channels_last_weights`).
  PyTorch picks the NHWC convolution kernels when either the input or the weight is channels_last, so converting
  the weights is enough. Measured on the 2-core dev CPU with one
  thread (noisy, relative): ResNet-18 at 224² batch 16 −21 %, the small CNN at 32² batch 128 −49 %; on GPUs NHWC is
  what cuDNN's tensor-core kernels want. The conversion is undone on exit, so a caller's model keeps its layout;
- bf16 autocast on CUDA (opt-in: ``amp``), safe for forward-only scoring, never on CPU by default.

:func:`compile_model` wraps ``torch.compile`` for GPU runs that repeat one shape many times; it is opt-in because
compilation costs seconds to minutes and pays only over long runs.

:func:`keep_freed_cpu_memory` stops glibc's ``malloc`` from handing the memory of freed tensors back to the system
between forward passes (every task and the benchmark runner call it; see there).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["channels_last_pays", "channels_last_weights", "compile_model", "fast_forward", "keep_freed_cpu_memory",
           "to_channels_last"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h> mallopt parameters
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
_TRIM_THRESHOLD = 2**30
_ALLOCATOR_TUNED: bool | None = None


def keep_freed_cpu_memory() -> bool:
    """Let glibc's ``malloc`` keep freed memory for the next tensor instead of returning it to the system.

    PyTorch's CPU allocator calls ``posix_memalign``/``free`` for every tensor. A batch of perturbed images (a few
    MB) lies above glibc's mmap threshold or at the top of the heap, so each free hands its pages back and the next
    pass page-faults fresh, zeroed pages: a perturbation method on a small model spends a large, erratic share of its
    time in the kernel. Raising the mmap threshold to its 32 MB ceiling and the trim threshold to 1 GB keeps those
    pages in the process. Measured on the 2-core dev VM (2026-12-07, the overhead regime of ``benchmarks/run.py``
    with ``keep_freed_memory=false`` and ``=true``, docs/benchmarks.md): RISE over 8 images × 500 masks on the small
    CNN at 32² 0.34–0.39 s → 0.18–0.19 s, LIME 0.20 s → 0.12 s, the process's system time 3.6–4.3 s → 0.7 s.
    The cost: the process's resident memory stays near its peak (up to 1 GB of freed memory is kept for reuse).

    Written by hand because it is one ``mallopt`` call: jemalloc or tcmalloc would do it too, but only when preloaded
    (``LD_PRELOAD``) before Python starts, which a task cannot arrange for itself. Does nothing (returns ``False``)
    off glibc, or with ``XAI_BENCH_KEEP_FREED_MEMORY=0``. Returns whether the setting is in effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = False
    if os.environ.get("XAI_BENCH_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):  # musl and others: leave them alone
            return False
        _ALLOCATOR_TUNED = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
            mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except OSError:
        return False
    if _ALLOCATOR_TUNED:
        log.debug("glibc malloc keeps freed memory (mmap threshold 32 MB, trim threshold 1 GB)")
    return _ALLOCATOR_TUNED


def channels_last_pays(model: nn.Module, device: str | torch.device | None = None) -> bool:
    """Whether NHWC weights are expected to speed ``model`` up on ``device``: it has 2-D convolutions (CPU and CUDA).

    On other backends (MPS, XPU) we keep the layout as it is: we have not measured them.
    """
    dev = torch.device(device) if device is not None else _device_of(model)
    return dev.type in ("cpu", "cuda") and any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_channels_last(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Convert the 4-D parameters and buffers of ``model`` to channels_last in place.

    Returns:
        The ``(module, name)`` pairs that were converted (and were contiguous before), for :func:`_restore`.
    """
    changed: list[tuple[nn.Module, str]] = []
    with torch.no_grad():
        for module in model.modules():
            for name, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if t is None or t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last):
                    continue
                t.data = t.data.contiguous(memory_format=torch.channels_last)
                changed.append((module, name))
    return changed


def _restore(changed: list[tuple[nn.Module, str]]) -> None:
    with torch.no_grad():
        for module, name in changed:
            t = getattr(module, name)
            t.data = t.data.contiguous()


@contextlib.contextmanager
def channels_last_weights(model: nn.Module | Callable[..., Any] | None, device: str | torch.device | None = None,
                          enabled: bool | None = None) -> Iterator[None]:
    """NHWC weights for the block (``None``: when :func:`channels_last_pays`), restored on exit; grad mode untouched.

    For gradient work too (attacks, gradient attributions): the values, and so the gradients, are the same up to
    float rounding. Weights that are channels_last already (a model trained so on a GPU) are left as they are.
    """
    changed: list[tuple[nn.Module, str]] = []
    # a plain function (some callers pass one as the model) has no weights to convert
    if isinstance(model, nn.Module) and (enabled if enabled is not None else channels_last_pays(model, device)):
        changed = to_channels_last(model)
    try:
        yield
    finally:
        _restore(changed)


@contextlib.contextmanager
def fast_forward(model: nn.Module | Callable[..., Any] | None, device: str | torch.device | None = None, *,
                 channels_last: bool | None = None, amp: bool = False, inference: bool = True) -> Iterator[None]:
    """Run forward-only work on ``model`` fast; everything is undone on exit.

    Args:
        model: the network (``None``: only the grad mode and autocast apply).
        device: where it runs (default: the device of its first parameter).
        channels_last: convert 4-D weights to NHWC for the block (``None``: when :func:`channels_last_pays`).
        amp: bf16 autocast, on CUDA only (ignored elsewhere: CPU bf16 is slower on most CPUs without AMX).
        inference: ``torch.inference_mode`` (tensors made inside are inference tensors: clone them before an
            in-place update outside the block); ``False`` uses ``torch.no_grad``.
    """
    dev = torch.device(device) if device is not None else (
        _device_of(model) if isinstance(model, nn.Module) else None)
    grad_mode = torch.inference_mode() if inference else torch.no_grad()
    cast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and dev is not None and dev.type == "cuda"
            else contextlib.nullcontext())
    # the conversion happens outside inference mode: the weights must stay normal tensors
    with channels_last_weights(model, dev, channels_last), grad_mode, cast:
        yield


def compile_model(model: nn.Module, enabled: bool | None = None, **kwargs: object) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (``None``: only on CUDA), else ``model`` unchanged.

    The compiled module shares parameters with ``model``. Extra ``kwargs`` go to ``torch.compile`` (e.g.
    ``mode="max-autotune"``, ``dynamic=False``).
    """
    if enabled is None:
        enabled = _device_of(model).type == "cuda"
    return torch.compile(model, **kwargs) if enabled else model  # type: ignore[return-value]


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))

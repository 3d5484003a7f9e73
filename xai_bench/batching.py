"""Run work in batches that shrink on out-of-memory errors, plus a batch-size heuristic and target resolution.

Perturbation methods (RISE, Score-CAM, occlusion-style metrics) push thousands of images through a model. The batch
size that fits depends on the model, the input size and whatever else holds memory, so we start from a guess and
halve it whenever PyTorch reports an out-of-memory error, instead of crashing a long run.

Public helpers:

- :class:`AdaptiveBatcher` — holds a batch size that only ever shrinks; ``batcher(fn, inputs_or_n)`` runs ``fn`` over
  chunks and concatenates the results. Reuse one batcher across many calls (e.g. one per mask chunk in RISE) so a
  size learned after an OOM is kept instead of being rediscovered every call.
- :func:`run_batched` — one-shot form: ``run_batched(fn, x, 64)`` == ``AdaptiveBatcher(64)(fn, x)``.
- :func:`default_batch_size` — a starting batch size for a model and input shape (larger on GPU).
- :func:`is_out_of_memory` — whether an exception is an OOM (CUDA or CPU allocator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from xai_bench.progress import ProgressBar

__all__ = ["AdaptiveBatcher", "call_halving_inner", "default_batch_size", "is_out_of_memory", "run_batched"]

BatchFn = Callable[[Tensor | slice], Tensor | None]
T = TypeVar("T")


def is_out_of_memory(err: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` and allocator ``RuntimeError``s that say they ran out of memory."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(err, (RuntimeError, MemoryError)):
        msg = str(err).lower()
        return isinstance(err, MemoryError) or "out of memory" in msg or "can't allocate memory" in msg
    return False


class AdaptiveBatcher:
    """Runs a function over chunks of a batch, halving the chunk size on out-of-memory errors.

    Args:
        batch_size: the first chunk size to try (≥ 1).
        device: where the work runs. Tensor chunks not already there are moved there before ``fn`` sees them (so
            the full input may stay on the CPU), and on CUDA the cache is emptied before a retry.
        min_batch_size: the size below which it gives up and raises. Default: 1.

    Attributes:
        batch_size: the current chunk size; it only ever shrinks, so later calls start from what last fitted.
    """

    def __init__(self, batch_size: int, *, device: str | torch.device | None = None, min_batch_size: int = 1) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}; pass None to use a default")
        if int(min_batch_size) < 1:
            raise ValueError(f"min_batch_size must be >= 1, got {min_batch_size}")
        self.batch_size = int(batch_size)
        self.min_batch_size = int(min_batch_size)
        self.device = torch.device(device) if device is not None else None

    def __call__(self, fn: BatchFn, inputs_or_n: Tensor | int, *, show_progress: bool | None = None,
                 desc: str | None = None, progress: ProgressBar | None = None) -> Tensor | None:
        """Apply ``fn`` chunk by chunk and concatenate its outputs along dim 0.

        Args:
            fn: called with a chunk ``inputs[i:j]`` when ``inputs_or_n`` is a tensor, or with ``slice(i, j)`` when it
                is an int ``n`` (index your own tensors with it). It must not have side effects that a retry of the
                same chunk would repeat (accumulate outside only after it returns), and it should return a tensor
                whose dim 0 matches the chunk, or ``None`` for every chunk.
            inputs_or_n: tensor split along dim 0, or the number of items.
            show_progress: show a bar over items (``None``: as the enclosing
                :func:`xai_bench.progress.progress_reporting` block says, for a loop with a ``desc``; a terminal
                bar, or log lines in logs).
            desc: the progress bar's label.
            progress: an open bar to advance instead (a method that calls the batcher several times keeps one bar
                over all calls); ``show_progress`` and ``desc`` are then ignored.

        Returns:
            The chunk outputs concatenated along dim 0, or ``None`` if ``fn`` returned ``None``.
        """
        is_tensor = isinstance(inputs_or_n, Tensor)
        n = inputs_or_n.shape[0] if is_tensor else int(inputs_or_n)
        if n < 0:
            raise ValueError(f"inputs_or_n must be a tensor or a non-negative count, got {inputs_or_n}")
        outputs: list[Tensor] = []
        start = 0
        # an unlabelled loop (an image batch inside a task) reports only when asked to
        own = progress is None and (desc is not None or bool(show_progress))
        bar = ProgressBar(total=n, desc=desc, show=show_progress, unit="img") if own else progress
        try:
            while start < n:
                stop = min(n, start + self.batch_size)
                try:
                    if is_tensor:
                        chunk = inputs_or_n[start:stop]
                        if self.device is not None and chunk.device != self.device:
                            chunk = chunk.to(self.device, non_blocking=True)
                        out = fn(chunk)
                    else:
                        out = fn(slice(start, stop))
                except (RuntimeError, MemoryError) as err:
                    if not is_out_of_memory(err):
                        raise
                    oom_msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                else:
                    oom_msg = None
                if oom_msg is not None:
                    # outside the except block, so the failed step's tensors (held by the traceback) are freed
                    self._shrink(stop - start, oom_msg)
                    continue
                if out is not None:
                    outputs.append(out)
                if bar is not None:
                    bar.update(stop - start)
                start = stop
        finally:
            if own and bar is not None:
                bar.close()
        if not outputs:
            return None
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)

    def _shrink(self, tried: int, oom_msg: str) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        new = max(tried, 1) // 2
        if new < self.min_batch_size:
            raise RuntimeError(
                f"out of memory even with batch_size={tried} ({oom_msg}); free memory (smaller model or input, "
                f"fewer images "
                f"per call) or run on a device with more memory"
            )
        self.batch_size = new


def call_halving_inner(fn: Callable[[dict[str, Any]], T], kwargs: dict[str, Any], keys: Sequence[str],
                       learned: dict[str, int] | None = None) -> T:
    """``fn(kwargs)``, halving the first of ``keys`` whose value is > 1 on each out-of-memory error.

    For work whose memory is set by an inner batch size (Captum's ``perturbations_per_eval`` or
    ``internal_batch_size``) when one outer item already does not fit. ``kwargs`` is updated in place, and ``learned``
    (if given) records the sizes that fitted, so the caller can start later calls from them. When no key is left to
    halve, the error is raised as it came.
    """
    while True:
        try:
            return fn(kwargs)
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            key = next((k for k in keys if kwargs.get(k) is not None and int(kwargs[k]) > 1), None)
            if key is None:
                raise
        # outside the except block, so the failed step's tensors (held by the traceback) are freed
        kwargs[key] = int(kwargs[key]) // 2
        if learned is not None:
            learned[key] = kwargs[key]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_batched(fn: BatchFn, inputs_or_n: Tensor | int, batch_size: int, *, device: str | torch.device | None = None,
                show_progress: bool | None = None, desc: str | None = None) -> Tensor | None:
    """Run ``fn`` over chunks of ``inputs_or_n`` (halving ``batch_size`` on OOM) and concatenate the outputs.

    One-shot form of :class:`AdaptiveBatcher` (see there for the contract of ``fn``).
    """
    return AdaptiveBatcher(batch_size, device=device)(fn, inputs_or_n, show_progress=show_progress, desc=desc)


def default_batch_size(model: nn.Module | None, input_shape: Sequence[int], device: str | torch.device | None) -> int:
    """A starting batch size for inference-only forward passes; OOM halving corrects it if it is too big.

    On CPU the cost per image grows with its size, so we aim at about 4 M input values per batch, capped at 128: on
    an idle 2-core machine a small CNN scores 2,048 images of 1×32×32 in 0.19 s at batch 128 and 0.35 s at 1,024
    (larger batches leave the caches). Images of 96×96 and more are capped at 16 on CPU: the per-image cost of a
    ResNet forward at 224² rises above batch ~16 (ResNet-18, one thread: 30.0 ms/image at batch 16, 35.3 at 48;
    channels_last 23.7 and 26.1).
    On CUDA we budget half the free memory at ~64 × the input's bytes per image (typical of no-grad CNN
    activations), capped at 1024. Larger models (by parameter count) get proportionally smaller batches above 25 M
    parameters.

    Args:
        model: the network (only its parameter count is used; ``None`` ignores it).
        input_shape: ``(C, H, W)`` or ``(N, C, H, W)`` of one input.
        device: where the forward passes run.

    Returns:
        A batch size ≥ 1.
    """
    if len(input_shape) < 2:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {tuple(input_shape)}")
    per_image = math.prod(int(v) for v in input_shape[-3:])
    n_params = sum(p.numel() for p in model.parameters()) if model is not None else 0
    size_penalty = max(1.0, n_params / 25e6)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        size = int(0.5 * free / (per_image * 4 * 64) / size_penalty)
        return max(1, min(1024, size))
    cap = 16 if per_image >= 3 * 96 * 96 else 128
    return max(1, min(cap, int(2**22 / per_image / size_penalty)))

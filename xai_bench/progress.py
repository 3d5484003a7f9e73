"""Progress of long methods: a bar per batch of perturbations with an ETA, that stays readable in logs.

RISE pushes ``n_masks × n_images`` masked images through the model, Score-CAM one per activation channel, Occlusion
and LIME hundreds per image: minutes on a CPU. Library code opens a :class:`ProgressBar` around such loops and
updates it once per batch; it shows only where a task asked for progress (``with progress_reporting():``) or a
caller passed ``show_progress=True``, so the library stays quiet by default.

- On a terminal it is a tqdm bar (``leave=False``, so it nests under a task's ``methods`` bar and disappears when
  done).
- Elsewhere (Hydra's log file, CI, ``nohup``) it writes one log line per ``log_every`` of the total (10 lines per
  bar by default) with the elapsed time and the ETA, instead of tqdm's carriage-return refreshes.
- A callback ``fn(desc, done, total)`` set with :func:`progress_reporting` sees every update (tests, web apps).

Captum's perturbation methods (Occlusion, FeatureAblation, Lime, KernelShap, ShapleyValueSampling) draw their own
tqdm bar when called with ``show_progress=True``; inside :func:`progress_reporting` those bars are routed through
:class:`ProgressBar` too (see :func:`xai_bench._compat.captum_progress_factory`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["ProgressBar", "ProgressCallback", "progress_enabled", "progress_reporting"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class _Reporting:
    enabled: bool
    callback: ProgressCallback | None
    log_every: float
    file: TextIO | None


_STATE: contextvars.ContextVar[_Reporting | None] = contextvars.ContextVar("xai_bench_progress", default=None)


@contextlib.contextmanager
def progress_reporting(enabled: bool = True, callback: ProgressCallback | None = None, *, log_every: float = 0.1,
                       file: TextIO | None = None) -> Iterator[None]:
    """Show the progress of long methods called inside this block (tasks enable it; the library never does).

    Args:
        enabled: draw bars / write log lines. ``False`` still calls ``callback``.
        callback: called as ``callback(desc, done, total)`` after every batch.
        log_every: fraction of the total between two log lines when the output is not a terminal. Default: 0.1
        file: where bars go (default ``sys.stderr``); decides terminal vs log lines.
    """
    if not 0 < log_every <= 1:
        raise ValueError(f"log_every must be in (0, 1], got {log_every}")
    token = _STATE.set(_Reporting(bool(enabled), callback, float(log_every), file))
    try:
        if enabled:
            from xai_bench._compat import captum_progress_factory

            with captum_progress_factory(ProgressBar):
                yield
        else:
            yield
    finally:
        _STATE.reset(token)


def progress_enabled(show: bool | None = None) -> bool:
    """``show`` when given, else whether the enclosing :func:`progress_reporting` block draws progress."""
    if show is not None:
        return bool(show)
    state = _STATE.get()
    return bool(state and state.enabled)


class ProgressBar:
    """A tqdm-like bar (``update``, ``close``, context manager, iteration) for a loop of batches.

    Args:
        total: number of items (masked images, perturbations, …), or ``None`` if unknown (no ETA then).
        desc: label, e.g. ``"RISE"``.
        show: draw it (``None``: as the enclosing :func:`progress_reporting` says).
        unit: what an item is, for the display.
        iterable: iterate over it, updating by one per item (how Captum uses tqdm).

    The enclosing block's callback, if any, is called after every update whether or not the bar is drawn.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, desc: str | None = None, total: int | None = None,
                 *, show: bool | None = None, unit: str = "it", **_: Any) -> None:
        state = _STATE.get()
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.desc = desc or "progress"
        self.total = int(total) if total is not None else None
        self.n = 0
        self.unit = unit
        self._callback = state.callback if state else None
        self._log_every = state.log_every if state else 0.1
        self._start = time.perf_counter()
        self._next_log = 0.0  # fraction of the total at which the next log line is due
        self._tqdm = None
        self._log = False
        if progress_enabled(show):
            file = (state.file if state else None) or sys.stderr
            if _is_terminal(file):
                from tqdm.auto import tqdm

                self._tqdm = tqdm(total=self.total, desc=self.desc, unit=unit, leave=False, file=file,
                                  mininterval=0.5, dynamic_ncols=True)
            else:
                self._log = True

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.n += int(n)
        if self._tqdm is not None:
            self._tqdm.update(n)
        if self._log and self.total:
            fraction = self.n / self.total
            if fraction >= self._next_log or self.n >= self.total:
                self._write(fraction)
                # the next multiple of log_every strictly above what is done: at most 1/log_every + 1 lines
                self._next_log = (math.floor(fraction / self._log_every + 1e-9) + 1) * self._log_every
        if self._callback is not None:
            self._callback(self.desc, self.n, self.total)

    def _write(self, fraction: float) -> None:
        elapsed = time.perf_counter() - self._start
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        log.info("%s: %3.0f%% (%d/%d %s), %s elapsed, ETA %s", self.desc, 100 * fraction, self.n, self.total,
                 self.unit, _seconds(elapsed), _seconds(eta))

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    # tqdm methods Captum may call
    def refresh(self) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass


def _is_terminal(file: TextIO) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def _seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 60:
        return f"{s:.0f}s"
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s < 3600 else f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"

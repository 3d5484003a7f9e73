"""Corruption suites: ``conf/corruption/*.yaml`` turned into ``{label: callable(x)}`` for the evaluate task."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from xai_bench.robustness.corruptions.imagenet_c import CORRUPTIONS, check_severity
from xai_bench.utils import build

__all__ = ["SeededCorruption", "build_suite"]


class SeededCorruption:
    """A corruption bound to its settings and a seeded random stream: call it on batch after batch.

    The generator is created on the first batch's device and advances with every call, so consecutive batches get
    fresh noise while the whole sequence is reproducible from ``seed``. :meth:`get_state` and :meth:`set_state` carry
    the stream over a kill: a resumed evaluate run continues it where the finished batches left it.
    """

    def __init__(self, fn: Callable[..., Tensor], seed: int | None = None, label: str = "") -> None:
        self.fn = fn
        self.seed = seed
        self.label = label
        target = fn.func if isinstance(fn, functools.partial) else fn
        try:
            self._takes_generator = "generator" in inspect.signature(target).parameters
        except (TypeError, ValueError):
            self._takes_generator = False
        self._generator: torch.Generator | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if not self._takes_generator or self.seed is None:
            return self.fn(x)
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(int(self.seed))
        return self.fn(x, generator=self._generator)

    def get_state(self) -> Tensor | None:
        """The generator's state after the batches drawn so far (``None``: nothing drawn, or nothing to draw)."""
        return None if self._generator is None else self._generator.get_state()

    def set_state(self, state: Tensor, device: torch.device) -> None:
        """Continue the stream from ``state`` (a :meth:`get_state`) on ``device``, the next batches' device."""
        self._generator = torch.Generator(device=device)
        self._generator.set_state(state)

    def __repr__(self) -> str:
        return f"SeededCorruption({self.label or self.fn!r}, seed={self.seed})"


def build_suite(cfg: Mapping[str, Any] | None) -> dict[str, Callable[[Tensor], Tensor]]:
    r"""Turn a corruption-suite config into ``{label: corrupt_fn(x)}``.

    Schema (``conf/corruption/*.yaml``)::

        names: [gaussian_noise, ...]   # registry names, crossed with severities → "gaussian_noise/3"
        severities: [1, 2, 3, 4, 5]
        custom: {contrast_x5: {_target_: xai_bench.robustness.corruptions.contrast, _partial_: true, factor: 5}}
        seed: 0                        # per-label generator; null = unseeded

    Args:
        cfg: the suite config (DictConfig or dict); ``None`` or an empty node gives an empty suite.

    Returns:
        An insertion-ordered dict; each callable maps N×C×H×W images in [0, 1] to corrupted images like them.
    """
    cfg = cfg or {}
    names = list(cfg.get("names") or [])
    severities = list(cfg.get("severities") or [])
    custom = cfg.get("custom") or {}
    seed = cfg.get("seed")
    if names and not severities:
        raise ValueError("corruption suite lists names but no severities; set severities: [1, 2, 3, 4, 5]")
    severities = [check_severity(s) for s in severities]
    suite: dict[str, Callable[[Tensor], Tensor]] = {}
    for name in names:
        fn = CORRUPTIONS.get(name)  # fail early on a typo, with close matches
        for sev in severities:
            label = f"{name}/{sev}"
            suite[label] = SeededCorruption(functools.partial(fn, severity=sev), seed, label)
    for label, node in custom.items():
        label = str(label)
        if label in suite:
            raise ValueError(f"custom corruption label {label!r} clashes with a registry label; rename it")
        fn = build(node)
        if not callable(fn):
            raise ValueError(f"custom corruption {label!r} did not build a callable; add _partial_: true")
        suite[label] = SeededCorruption(fn, seed, label)
    return suite

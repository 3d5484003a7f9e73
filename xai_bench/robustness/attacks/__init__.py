"""Gradient attacks in pixel space on classifiers that take N×C×H×W images in [0, 1].

:class:`Attack` is the template (input checks, eval mode, ε sweeps); :class:`FGSM` and :class:`PGD` (L∞ / L2)
implement :meth:`Attack.perturb`. A new attack subclasses :class:`Attack` and gets a ``conf/attack/<name>.yaml``
whose ``method`` node targets it; :func:`build_attack` turns that node into ``(attack, eps_list)``.
"""

from xai_bench.robustness.attacks.base import LOSSES, Attack, build_attack, parse_eps
from xai_bench.robustness.attacks.fgsm import FGSM
from xai_bench.robustness.attacks.pgd import PGD

__all__ = ["FGSM", "LOSSES", "PGD", "Attack", "build_attack", "parse_eps"]

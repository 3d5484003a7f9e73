"""xai-bench: explain and stress-test image classifiers (Captum + Hydra + W&B).

The public API is re-exported here lazily (PEP 562), so ``import xai_bench`` stays cheap for the entry scripts.
"""

from __future__ import annotations

import importlib
from typing import Any

from xai_bench import _compat  # noqa: F401  (must run before torchvision/timm are imported)
from xai_bench.config import register as _register_schemas

_register_schemas()  # config-group schemas in Hydra's ConfigStore, before anything composes a config

__version__ = "0.1.0"

_EXPORTS = {
    # models
    "ImageClassifier": "xai_bench.models", "create_model": "xai_bench.models", "list_models": "xai_bench.models",
    "load_checkpoint": "xai_bench.models", "save_checkpoint": "xai_bench.models",
    # data
    "DataBundle": "xai_bench.data", "make_loader": "xai_bench.data", "load_image": "xai_bench.data",
    # attribution
    "build_attribution": "xai_bench.attribution.runner", "Explainer": "xai_bench.attribution.runner",
    "RISE": "xai_bench.attribution", "ScoreCAM": "xai_bench.attribution", "EigenCAM": "xai_bench.attribution",
    "GradCAMPlusPlus": "xai_bench.attribution", "ForGrad": "xai_bench.attribution",
    "forgrad_filter": "xai_bench.attribution",
    # robustness
    "Attack": "xai_bench.robustness.attacks", "FGSM": "xai_bench.robustness.attacks",
    "PGD": "xai_bench.robustness.attacks", "build_attack": "xai_bench.robustness.attacks",
    "parse_eps": "xai_bench.robustness.attacks", "summarize_sweep": "xai_bench.robustness.sweeps",
    "corrupt": "xai_bench.robustness.corruptions", "list_corruptions": "xai_bench.robustness.corruptions",
    "build_suite": "xai_bench.robustness.corruptions",
    "majority_vote": "xai_bench.robustness.uncertainty", "mutual_information": "xai_bench.robustness.uncertainty",
    "predictive_entropy": "xai_bench.robustness.uncertainty",
    # utilities
    "build": "xai_bench.utils", "seed_everything": "xai_bench.utils",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xai_bench' has no attribute {name!r}")

"""xai-bench: explain and stress-test image classifiers (Captum + Hydra + W&B)."""

from xai_bench import _compat  # noqa: F401  (must run before torchvision/timm are imported)

__version__ = "0.1.0"

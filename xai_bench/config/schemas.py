# ruff: noqa: UP045  (OmegaConf 2.3 reads typing.Optional in dataclass schemas; keep it over PEP 604 unions)
"""Structured-config schemas: one dataclass per config group whose files share a shape.

Each is stored in Hydra's ConfigStore as ``schema/<group>`` and pulled into every file of its group through the
file's defaults list (``- /schema/attribution@_here_``), so the defaults live here once, values are type-checked at
composition, and a misspelt key — in a YAML file or on the command line — fails before any work with Hydra's
``Key 'windw' not in 'AttributionSchema'`` naming the key and the schema (``python explain.py --info defaults``
shows where it came from; :func:`xai_bench.config.valid_keys` lists the keys).

Groups whose files each call a different builder (``dataset``, ``optim``, ``logger``, and a scheduler's inner
``scheduler`` node) have no shared shape: their schema is the ``_target_`` callable's own signature, checked by
:func:`xai_bench.config.validate` when a task starts (a builder that takes ``**kwargs`` would defeat that, so ours
take only the keys they use). A second copy of a signature in a dataclass would only drift from it.

The ``_global_`` groups (``task``, ``experiment``, ``debug``, ``hparams_search``) hold no node of their own: what
they set lands in the groups above and is checked there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

__all__ = ["SCHEMAS", "AttackSchema", "AttributionSchema", "CorruptionSchema", "EarlyStoppingSchema",
           "EnsembleSchema", "ModelSchema", "PathsSchema", "SchedulerSchema", "SegmentationSchema", "TrainerSchema",
           "register"]


@dataclass
class SlicSchema:
    """SLIC superpixels (``skimage.segmentation.slic``)."""

    n_segments: int = 50
    compactness: float = 10.0
    sigma: float = 1.0


@dataclass
class QuickshiftSchema:
    """Quickshift superpixels (``skimage.segmentation.quickshift``); null: sized to the image (superpixels.py)."""

    kernel_size: Optional[float] = None        # 4 at 224², scaled with the shorter side (≥ 1)
    max_dist: Optional[float] = None           # 200 at 224², scaled with the shorter side
    ratio: float = 0.2


@dataclass
class GridSchema:
    """Square patches; ``patch_size`` pixels, else about ``n_segments`` cells (null and null: 49 cells)."""

    patch_size: Optional[int] = None
    n_segments: Optional[int] = None


@dataclass
class SegmentationSchema:
    """Feature masks of LIME, Kernel SHAP and feature ablation: each algorithm's settings under its own key, so
    switching ``algorithm`` never passes SLIC's settings to quickshift."""

    algorithm: str = "slic"                    # slic | quickshift | grid
    slic: SlicSchema = field(default_factory=SlicSchema)
    quickshift: QuickshiftSchema = field(default_factory=QuickshiftSchema)
    grid: GridSchema = field(default_factory=GridSchema)


@dataclass
class AttributionSchema:
    """``conf/attribution/<name>.yaml``: a Captum-style method and how the runner drives it (see runner.py)."""

    name: str = MISSING
    method: Any = MISSING                      # {_target_: <class>, _partial_: true, <constructor args>}
    layer: Optional[str] = None                # layer methods: null → model.default_layer
    upsample: bool = False                     # layer methods: upsample the layer map to the input size
    baseline: Optional[str] = None             # zeros | constant | blurred | uniform
    baseline_value: Optional[float] = None
    baseline_sigma: Optional[float] = None
    baseline_seed: Optional[int] = None
    baseline_samples: Optional[int] = None     # a distribution of references (GradientSHAP)
    wrapper: Optional[Any] = None              # {type: smoothgrad|smoothgrad_sq|vargrad, nt_samples, stdevs, …}
    forgrad_sigma: Optional[float] = None      # ForGrad low-pass of the map
    channel_reduction: Optional[str] = "sum"   # sum | abs_sum | max_abs | mean | null
    segmentation: Optional[SegmentationSchema] = None  # feature mask (LIME, Kernel SHAP, feature ablation)
    window: Optional[int] = None               # Occlusion window / stride in pixels (null: sized to the image)
    stride: Optional[int] = None
    batch_size: Optional[int] = None           # images per attribute() call (halved on out-of-memory)
    kwargs: Any = field(default_factory=dict)  # passed to attribute()
    # method facts (attribution/base.py): null → the method class's attribute, else the default
    signed: Optional[bool] = None
    forward_only: Optional[bool] = None
    one_image_per_call: Optional[bool] = None
    unshare_nonlinearities: Optional[bool] = None
    figure: Optional[str] = None


@dataclass
class AttackSchema:
    """``conf/attack/<name>.yaml``: an attack class bound to the model at run time and its ε sweep."""

    name: str = MISSING
    method: Any = MISSING                      # {_target_: xai_bench.robustness.attacks.<Attack>, _partial_: true, …}
    eps: Any = field(default_factory=lambda: [0])  # floats or "a/b" strings, pixel units
    target_class: Optional[int] = None         # int → targeted attack towards this class for all images
    save_examples: bool = False


@dataclass
class CorruptionSchema:
    """``conf/corruption/<name>.yaml``: registered corruptions × severities plus parametric custom ones."""

    names: Any = field(default_factory=list)
    severities: Any = field(default_factory=list)
    custom: Any = field(default_factory=dict)  # label → _partial_ node of a parametric corruption
    seed: Optional[int] = 0


@dataclass
class ModelSchema:
    """``conf/model/<name>.yaml``: arguments of :func:`xai_bench.models.create_model`."""

    _target_: str = "xai_bench.models.create_model"
    name: str = MISSING
    arch: Optional[str] = None                 # timm / torchvision architecture (folded into name)
    num_classes: Optional[int] = None
    in_chans: Optional[int] = None
    input_size: Optional[int] = None
    pretrained: bool = False
    path: Optional[str] = None                 # model=checkpoint: a folder written by train.py
    dropout: Optional[float] = None            # small_cnn
    mean: Optional[Any] = None                 # preprocessing overrides
    std: Optional[Any] = None
    class_names: Optional[Any] = None
    default_layer: Optional[str] = None
    resize_size: Optional[int] = None


@dataclass
class EarlyStoppingSchema:
    monitor: str = "val/acc"
    mode: str = "max"                          # max | min
    patience: Optional[int] = 4                # null: never stop early
    min_delta: float = 0.001


@dataclass
class TrainerSchema:
    """``conf/trainer/<name>.yaml``: the training loop's settings (training.py)."""

    max_epochs: int = 15
    batch_size: int = 128
    eval_batch_size: int = 512
    num_workers: int = 0
    amp: Any = "auto"                          # auto | bf16 | fp16 | none
    channels_last: Any = "auto"                # auto | true | false
    grad_clip: Optional[float] = None
    resume: Any = False                        # false | true | path to an earlier run folder or last.pt
    early_stopping: EarlyStoppingSchema = field(default_factory=EarlyStoppingSchema)
    log_every_n_steps: Optional[int] = 50
    limit_train_batches: Optional[int] = None
    progress: bool = True


@dataclass
class EnsembleSchema:
    """``conf/ensemble/<name>.yaml``: members taken from ``conf/model`` files, and how their votes combine."""

    members: Any = MISSING                     # key → a conf/model node
    combine: Any = field(default_factory=lambda: ["vote", "mean"])
    max_figures: int = 12
    corruption_images: int = 2                 # with corruption=…: the first N images, corrupted, by every member


@dataclass
class SchedulerSchema:
    """``conf/scheduler/<name>.yaml``: a learning-rate schedule (its ``scheduler`` node's schema is the
    ``torch.optim.lr_scheduler`` class's signature) and when it steps."""

    interval: str = "epoch"                    # epoch | step: when scheduler.step() runs
    scheduler: Optional[Any] = None            # a _partial_ torch.optim.lr_scheduler node; null: a constant rate


@dataclass
class PathsSchema:
    """``conf/paths/<name>.yaml``: where data is read and results are written."""

    data_dir: str = MISSING
    output_dir: str = MISSING


SCHEMAS: dict[str, type] = {
    "attribution": AttributionSchema, "attack": AttackSchema, "corruption": CorruptionSchema,
    "model": ModelSchema, "trainer": TrainerSchema, "ensemble": EnsembleSchema, "scheduler": SchedulerSchema,
    "paths": PathsSchema,
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore as ``schema/<group>`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        cs.store(group="schema", name=group, node=schema)

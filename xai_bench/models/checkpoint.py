"""Our own checkpoints: ``model.safetensors`` (weights, never unpickled) + ``model.json`` (how to rebuild them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xai_bench.errors import CheckpointError
from xai_bench.models.base import ImageClassifier
from xai_bench.utils import atomic_path, write_json

WEIGHTS = "model.safetensors"
SPEC = "model.json"


def save_checkpoint(model: ImageClassifier, directory: str | Path) -> Path:
    """Write weights and spec into ``directory`` (each file atomically). Returns the directory."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json(directory / SPEC, model.spec())
    return directory


def load_checkpoint(path: str | Path, *, map_location: str = "cpu") -> ImageClassifier:
    """Rebuild a model from a checkpoint folder (or its ``model.safetensors``/``model.json`` file).

    Raises :class:`~xai_bench.errors.CheckpointError` (a ``ValueError``) naming the file, the field and the fix
    when ``model.json`` cannot describe a model (unknown architecture, a class count that is not a plausible integer,
    ``std`` 0, a non-finite ``mean``, class names of the wrong length, a ``default_layer`` the network lacks, a spec
    naming another checkpoint) or when the weights do not fit it (keys or shapes); ``FileNotFoundError`` when a file
    is missing.
    """
    from xai_bench.models import create_model

    path = Path(path)
    directory = path.parent if path.suffix in (".safetensors", ".json") else path
    spec_path, weights_path = directory / SPEC, directory / WEIGHTS
    for p in (spec_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file {p} does not exist; model.path must point at a folder written "
                                    f"by train.py (it holds {WEIGHTS} and {SPEC}), e.g. outputs/<run>/best")
    try:
        spec = json.loads(spec_path.read_text())
        arch = dict(spec["arch"])
        name = arch.pop("name")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint spec {spec_path} is corrupt ({type(exc).__name__}: {exc}); it needs an "
                              f"'arch' object with a 'name'. Re-export it with train.py") from None
    _check_spec(spec, name, arch, spec_path)
    try:
        model = create_model(name, class_names=spec.get("class_names"), mean=spec.get("mean"), std=spec.get("std"),
                             default_layer=spec.get("default_layer"), resize_size=spec.get("resize_size"), **arch)
    except (KeyError, ValueError, TypeError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, KeyError) and spec.get("default_layer") and "layer" in str(text):
            raise CheckpointError(f"{spec_path}: field 'default_layer' = {spec['default_layer']!r} is not a module "
                                  f"of {name!r}: {text}. Set it to one of those names, or null") from None
        raise CheckpointError(f"{spec_path} cannot rebuild its model (arch.name={name!r}): {text}. Fix that field "
                              f"of {SPEC}, or re-export the checkpoint with train.py") from None
    try:
        state = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint weights {weights_path} cannot be read ({exc}); the file is corrupt or "
                              "not a safetensors file") from exc
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {weights_path} does not match its spec {spec_path} (arch.name={name!r}): "
                              f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}; the two files come "
                              f"from different models. Re-export the checkpoint with train.py")
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        listed = "; ".join(f"{k} has shape {list(got)}, the model needs {list(want)}" for k, got, want in wrong[:3])
        raise CheckpointError(f"checkpoint {weights_path} does not fit the model its spec {spec_path} describes: "
                              f"{listed}{' …' if len(wrong) > 3 else ''}. Check {SPEC}'s arch (num_classes, "
                              f"in_chans, input_size) against the weights, or re-export with train.py")
    model.load_state_dict(state, strict=True)
    return model


MAX_CLASSES = 1_000_000  # far beyond any real label set (ImageNet-21k: 21,843): a larger count is a typo


def _check_spec(spec: dict[str, Any], name: Any, arch: dict[str, Any], spec_path: Path) -> None:
    """The fields of ``model.json`` that ``create_model`` would otherwise reject without naming the file, accept
    silently (``std: 0`` divides by zero) or follow forever (a spec naming a checkpoint)."""
    def bad(field: str, problem: str, fix: str) -> CheckpointError:
        return CheckpointError(f"{spec_path}: field {field!r} {problem}; {fix}")

    if not isinstance(name, str) or not name:
        raise bad("arch.name", f"must be an architecture name, got {name!r}", "e.g. \"small_cnn\" or \"timm/resnet18\"")
    from xai_bench.models import model_options

    try:
        model_options(name)
    except (KeyError, ValueError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise bad("arch.name", f"is not a known architecture ({text})", "set it to a registered model name") from None
    if name.partition("/")[0] == "checkpoint":
        raise bad("arch.name", "names another checkpoint (a spec pointing at a checkpoint, possibly its own folder, "
                  "would be followed forever)", "set it to the architecture the weights belong to, e.g. \"small_cnn\"")
    for field, value in (("arch.num_classes", arch.get("num_classes")), ("num_classes", spec.get("num_classes"))):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 1 <= value <= MAX_CLASSES):
            raise bad(field, f"must be a whole number of classes in [1, {MAX_CLASSES:,}], got {value!r}",
                      "set it to the length of class_names (the size of the weights' last layer)")
    n = arch.get("num_classes") if arch.get("num_classes") is not None else spec.get("num_classes")
    if arch.get("num_classes") is not None and spec.get("num_classes") is not None \
            and arch["num_classes"] != spec["num_classes"]:
        raise bad("num_classes", f"is {spec['num_classes']} but arch.num_classes is {arch['num_classes']}",
                  "make the two agree")
    names = spec.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise bad("class_names", f"must be a list of strings, got {type(names).__name__}", "one name per class")
        if n is not None and len(names) != n:
            raise bad("class_names", f"has {len(names)} names for a model with num_classes={n}",
                      f"give one name per class ({n}), or null for \"0\" … \"{n - 1}\"")
    for field in ("mean", "std"):
        value = spec.get(field)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                 for v in values):
            raise bad(field, f"must be a list of finite numbers (one per input channel), got {value!r}",
                      "e.g. [0.485, 0.456, 0.406] for mean, [0.229, 0.224, 0.225] for std")
        if field == "std" and any(v <= 0 for v in values):
            raise bad(field, f"must be positive (the model divides by it), got {value!r}",
                      "use the per-channel standard deviation of the training images, e.g. [0.229, 0.224, 0.225]")
    layer = spec.get("default_layer")
    if layer is not None and not isinstance(layer, str):
        raise bad("default_layer", f"must be a dotted module name or null, got {layer!r}", "e.g. \"net.layer4\"")

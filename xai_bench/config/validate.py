"""The start-up check of a composed task config: every key against its schema or its ``_target_``'s signature.

Hydra already rejects a misspelt key in a group file, or in a ``key=value`` override, while composing: the group
schemas are closed dataclasses. What composition cannot see, and :func:`validate` checks before any data or model is
built:

- keys added with ``+key=value`` (Hydra adds them to any node, schema or not) and nodes built in Python;
- ``_target_`` nodes, whose valid keys are their callable's parameters: ``dataset``, ``optim``, the scheduler,
  ``logger``, an attribution method's constructor options, an attack class's, a custom corruption's;
- an attribution method's ``kwargs`` against its ``attribute()`` signature (``n_step`` for ``n_steps``);
- model options the named model would not use (``dropout`` on EfficientNet-Lite), wherever a model node sits
  (``model``, ensemble members, ``reference_model``).

All problems are gathered into one :class:`ConfigKeyError`, one line each: the config path of the key, the close
matches and the valid keys; ``seed`` must be an integer already here (the run is seeded next).

:func:`check_values` is the second start-up check, of *values* that cannot work (``optim.lr=-1``,
``trainer.max_epochs=0``, ``top_k=0``, an unknown corruption or severity, a target that is neither a mode nor class
ids). Tasks run it first thing inside the run, before any data is loaded, so the failure is also recorded in
``results.json``. What needs the model (class ids against ``num_classes``, a Grad-CAM layer) is checked as soon as
the model is built, before the images are read (:func:`xai_bench.tasks.setup.check_against_model`).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import OmegaConf

from xai_bench.config.schemas import (AttackSchema, AttributionSchema, CorruptionSchema, EarlyStoppingSchema,
                                      EnsembleSchema, GridSchema, ModelSchema, PathsSchema, QuickshiftSchema,
                                      SchedulerSchema, SegmentationSchema, SlicSchema, TrainerSchema)
from xai_bench.errors import ConfigError

# Nested schemas checked inside their parent's node (schema → field → schema of that field's mapping).
_NESTED: dict[type, dict[str, type]] = {
    AttributionSchema: {"segmentation": SegmentationSchema},
    SegmentationSchema: {"slic": SlicSchema, "quickshift": QuickshiftSchema, "grid": GridSchema},
}

__all__ = ["ConfigKeyError", "check_keys", "check_target", "check_values", "unknown_key_message", "validate"]

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# attribute() arguments the attribution runner passes itself; in `kwargs` they would clash.
_RUNNER_ARGS = {"inputs", "target", "baselines", "feature_mask", "sliding_window_shapes", "strides"}
_CREATE_MODEL = "xai_bench.models.create_model"


class ConfigKeyError(ConfigError):
    """Config keys that no schema or builder knows (and other config problems). ``problems`` holds one line each.
    A :class:`~xai_bench.errors.ConfigError`, so a ``ValueError``."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            super().__init__(f"{len(self.problems)} config problems:\n" + "\n".join(f"  {p}" for p in self.problems))


def unknown_key_message(path: str, key: str, valid: Iterable[str], what: str = "") -> str:
    """``"<path>.<key>: unknown key for <what>. Did you mean …? Valid keys: …."`` (close matches by difflib)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    where = f"{path}.{key}" if path else key
    return (f"{where}: unknown key{f' for {what}' if what else ''}.{hint} Valid keys: "
            f"{', '.join(valid) or '(none)'}.")


def check_keys(path: str, keys: Iterable[str], valid: Iterable[str], what: str = "") -> None:
    """Raise :class:`ConfigKeyError` for the keys of ``keys`` not in ``valid`` (Hydra's ``_target_`` … excepted)."""
    valid = list(valid)
    problems = [unknown_key_message(path, k, valid, what) for k in keys if k not in valid and k not in _HYDRA_KEYS]
    if problems:
        raise ConfigKeyError(problems)


def check_target(node: Mapping[str, Any], path: str) -> None:
    """Check one ``_target_`` node (``cfg.dataset`` …) against its callable's signature; raise :class:`ConfigKeyError`
    naming ``path.<key>``, the close matches and the valid keys."""
    problems: list[str] = []
    _check_target(_plain(node), path, problems)
    if problems:
        raise ConfigKeyError(problems)


def validate(cfg: Mapping[str, Any]) -> None:
    """Check a composed task config before any work; raise one :class:`ConfigKeyError` listing every problem.

    Whatever of these the config has is checked: ``attribution.<name>`` and ``metric.<name>`` nodes, ``attack``,
    ``corruption``,
    ``model``, ``trainer``, ``scheduler``, ``paths``, ``ensemble`` (and its members), ``reference_model`` against
    their schemas (:data:`xai_bench.config.SCHEMAS`), and every ``_target_`` node inside or beside them
    (``dataset``, ``optim``, ``scheduler.scheduler``, ``logger``) against its callable's signature. Unknown model
    names are left to ``create_model``, which lists the close matches when the task builds the model (inside the
    run, so that ``results.json`` records the failure).
    """
    c = _plain(cfg)
    problems: list[str] = []
    attributions = c.get("attribution")
    if isinstance(attributions, dict):
        for name, node in attributions.items():
            if node is not None:
                _check_schema(node, AttributionSchema, f"attribution.{name}", problems)
    for path, schema in (("attack", AttackSchema), ("corruption", CorruptionSchema), ("trainer", TrainerSchema),
                         ("scheduler", SchedulerSchema), ("paths", PathsSchema)):
        if c.get(path) is not None:
            _check_schema(c[path], schema, path, problems)
    for path in ("model", "reference_model"):
        if c.get(path) is not None:
            _check_schema(c[path], ModelSchema, path, problems)
    if c.get("ensemble") is not None:
        _check_ensemble(c["ensemble"], problems)
    metrics = c.get("metric")
    if isinstance(metrics, dict):  # explanation metrics: each a `_target_` class taking its settings
        for name, node in metrics.items():
            if isinstance(node, dict):
                _check_target(node, f"metric.{name}", problems)
    scheduler = c.get("scheduler")
    for path, node in (("dataset", c.get("dataset")), ("optim", c.get("optim")), ("logger", c.get("logger")),
                       ("scheduler.scheduler", scheduler.get("scheduler") if isinstance(scheduler, dict) else None)):
        if isinstance(node, dict):
            _check_target(node, path, problems)
    seed = c.get("seed")
    if "seed" in c and not _is_interpolation(seed) and _as_int(seed) is None:
        problems.append(f"seed: must be an integer, got {seed!r}; e.g. seed=0")
    if problems:
        raise ConfigKeyError(list(dict.fromkeys(problems)))  # a key off both schema and signature: said once


def check_values(cfg: Mapping[str, Any]) -> None:
    """Check setting values that cannot work, before any data is loaded; raise one :class:`ConfigKeyError` (a
    ``ValueError``) with a line per problem naming the field and what would work.

    Whatever of these the config has is checked: ``seed``, ``top_k``, ``target``, ``batch_size``,
    ``optim.lr`` / ``optim.weight_decay``, the ``trainer``'s epochs, batch sizes and workers, ``attack.target_class``,
    and ``corruption`` names and severities (built once, so a typo lists the close matches). Interpolations are left
    to Hydra.
    """
    c = _plain(cfg)
    problems: list[str] = []

    def number(path: str, *, lo: float | None = None, strict: bool = False, integer: bool = False,
               hint: str = "") -> None:
        node: Any = c
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return
            node = node[part]
        if node is None or _is_interpolation(node):
            return
        value = _as_int(node) if integer else _as_float(node)
        kind = "an integer" if integer else "a finite number"
        if value is None:
            problems.append(f"{path}: must be {kind}, got {node!r}{hint}")
        elif lo is not None and (value <= lo if strict else value < lo):
            bound = f"> {lo:g}" if strict else f">= {lo:g}"
            problems.append(f"{path}: must be {bound}, got {node!r}{hint}")

    number("seed", integer=True, hint="; e.g. seed=0")
    number("top_k", lo=1, integer=True, hint="; top_k=1 explains the predicted class")
    number("batch_size", lo=1, integer=True)
    number("num_workers", lo=0, integer=True)
    number("optim.lr", lo=0, strict=True, hint="; the learning rate must be positive, e.g. optim.lr=0.01")
    number("optim.weight_decay", lo=0)
    number("trainer.max_epochs", lo=1, integer=True, hint="; train at least one epoch (e.g. trainer.max_epochs=1)")
    number("trainer.batch_size", lo=1, integer=True)
    number("trainer.eval_batch_size", lo=1, integer=True)
    number("trainer.num_workers", lo=0, integer=True)
    if isinstance(c.get("attack"), dict):
        number("attack.target_class", lo=0, integer=True, hint="; a class id, or null for an untargeted attack")
    if "target" in c and not _is_interpolation(c["target"]):
        problems += _target_problems(c["target"])
    problems += _corruption_problems(cfg)
    if problems:
        raise ConfigKeyError(list(dict.fromkeys(problems)))


def _target_problems(target: Any) -> list[str]:
    """``target``: ``predicted``, ``label``, a class id or a non-empty list of ids (checked against the model's
    ``num_classes`` once it is built)."""
    ids = target if isinstance(target, list) else [target]
    if isinstance(target, str) and target in ("predicted", "label"):
        return []
    if ids and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        return []
    return [f"target must be 'predicted', 'label', a class id or a non-empty list of ids (>= 0), got {target!r}; "
            "e.g. target=predicted top_k=2 or target=[281,285]"]


def _corruption_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Build the corruption suite once (cheap: partials), so an unknown name or severity fails now."""
    node = cfg.get("corruption") if isinstance(cfg, Mapping) else None
    if not isinstance(node, Mapping) or not (node.get("names") or node.get("custom")):
        return []
    from xai_bench.robustness.corruptions import build_suite

    try:
        build_suite(node)
    except (ValueError, KeyError, TypeError) as exc:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return [f"corruption: {text}"]
    return []


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------------------------
def _plain(cfg: Any) -> Any:
    """Plain containers, interpolations left as written (``${hydra:…}`` cannot resolve outside a Hydra run); model
    names are resolved on their own where needed."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _check_schema(node: Any, schema: type, path: str, problems: list[str], extra: Iterable[str] = ()) -> None:
    """``node``'s keys against the dataclass ``schema``; nested schemas, model options and ``_target_`` nodes too."""
    if not isinstance(node, dict):
        if node != "???":
            problems.append(f"{path}: expected a mapping with keys {', '.join(_fields(schema))}, got {node!r}")
        return
    valid = [*_fields(schema), *extra]
    for key in node:
        if key not in valid:
            problems.append(unknown_key_message(path, str(key), valid, schema.__name__))
    for key, sub in _NESTED.get(schema, {}).items():
        if isinstance(node.get(key), dict):
            _check_schema(node[key], sub, f"{path}.{key}", problems)
    if schema is TrainerSchema and isinstance(node.get("early_stopping"), dict):
        _check_schema(node["early_stopping"], EarlyStoppingSchema, f"{path}.early_stopping", problems)
    elif schema is ModelSchema:
        _check_model(node, path, problems)
    elif schema in (AttributionSchema, AttackSchema) and isinstance(node.get("method"), dict):
        _check_target(node["method"], f"{path}.method", problems)
        if schema is AttributionSchema:
            _check_attribute_kwargs(node, path, problems)
    elif schema is CorruptionSchema and isinstance(node.get("custom"), dict):
        for label, item in node["custom"].items():
            if isinstance(item, dict):
                _check_target(item, f"{path}.custom.{label}", problems)


def _check_ensemble(node: Any, problems: list[str]) -> None:
    _check_schema(node, EnsembleSchema, "ensemble", problems)
    members = node.get("members") if isinstance(node, dict) else None
    if isinstance(members, dict):  # label → conf/model node, as conf/ensemble/*.yaml compose them
        items = [(f"ensemble.members.{label}", m, ()) for label, m in members.items()]
    elif isinstance(members, list):  # programmatic: a list of model nodes, each with an optional label
        items = [(f"ensemble.members[{i}]", m, ("label",)) for i, m in enumerate(members)]
    else:
        return
    for path, member, extra in items:
        _check_schema(member, ModelSchema, path, problems, extra)


def _check_model(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """Options set for a model that would not use them (``xai_bench.models.model_options``)."""
    if node.get("_target_", _CREATE_MODEL) != _CREATE_MODEL:
        _check_target(node, path, problems)  # a builder of the user's own: its signature is its schema
        return
    from xai_bench.models import model_options

    name, arch = node.get("name"), node.get("arch")
    if isinstance(name, str) and "${" in name and isinstance(arch, str) and name.endswith("${.arch}"):
        name = name.replace("${.arch}", arch)  # timm/${.arch}: the one interpolation model files use
    if not isinstance(name, str) or "${" in name or name == "???":
        return
    try:
        used = model_options(name, arch if isinstance(arch, str) else None)
    except (KeyError, ValueError):
        return  # an unknown name: create_model reports it with close matches when the task builds the model
    defaults = {f.name: f.default for f in dataclasses.fields(ModelSchema)}
    for key, value in node.items():
        if key in ("_target_", "name", "label") or key in used or key not in defaults:
            continue
        if value is not None and value != defaults[key]:
            fix = "false (it has no pretrained weights)" if key == "pretrained" else "null"
            problems.append(f"{path}.{key}: model {name!r} does not use {key!r}; set {path}.{key}={fix}. Options "
                            f"of {name}: {', '.join(used)}.")


def _check_attribute_kwargs(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """``kwargs`` go to ``method.attribute()``: each must be one of its parameters (unless it takes ``**kwargs``)."""
    kwargs, target = node.get("kwargs"), node["method"].get("_target_")
    if not isinstance(kwargs, dict) or not kwargs or not isinstance(target, str):
        return
    cls = _locate(target, f"{path}.method._target_", [])
    params = _parameters(getattr(cls, "attribute", None)) if cls is not None else None
    if params is None:
        return
    for key in kwargs:
        if key in _RUNNER_ARGS:
            problems.append(f"{path}.kwargs.{key}: the runner passes {key!r} to attribute() itself; remove it")
        elif key not in params:
            problems.append(unknown_key_message(f"{path}.kwargs", str(key), set(params) - _RUNNER_ARGS,
                                                f"{cls.__name__}.attribute()"))


def _check_target(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """A ``_target_`` node's keys against the callable's parameters; ``_partial_`` nodes leave the leading
    positional arguments (model, parameters, optimiser) to be bound at run time. Nested ``_target_`` nodes (LIME's
    surrogate model) are checked too."""
    target = node.get("_target_")
    if not isinstance(target, str) or "${" in target:
        return
    fn = _locate(target, f"{path}._target_", problems)
    if fn is None:
        return
    params = _parameters(fn)
    if params is not None:
        if node.get("_partial_"):
            # leading arguments without a default that the node leaves out are bound at run time (the model, the
            # optimiser's parameters, the images): not config keys
            for name, p in list(params.items()):
                if (p.default is not inspect.Parameter.empty or p.kind is inspect.Parameter.KEYWORD_ONLY
                        or name in node):
                    break
                del params[name]
        for key in node:
            if key not in _HYDRA_KEYS and key not in params:
                problems.append(unknown_key_message(path, str(key), params, target))
        if not node.get("_partial_"):
            problems += [f"{path}.{p}: required by {target} but not set" for p, param in params.items()
                         if param.default is inspect.Parameter.empty and p not in node]
    for key, item in node.items():
        if isinstance(item, dict) and "_target_" in item:
            _check_target(item, f"{path}.{key}", problems)


def _locate(target: str, path: str, problems: list[str]) -> Callable | None:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as err:  # ImportError, AttributeError, ValueError …: all mean "no such target"
        problems.append(f"{path}: cannot import {target!r} ({type(err).__name__}: {err})")
        return None


def _parameters(fn: Any) -> dict[str, inspect.Parameter] | None:
    """Named parameters of ``fn`` (a class: its constructor's) but ``self``; ``None`` when it takes ``**kwargs``
    (nothing to check) or has no signature."""
    if fn is None:
        return None
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {name: p for name, p in sig.parameters.items()
            if p.kind is not inspect.Parameter.VAR_POSITIONAL and name != "self"}


def _fields(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


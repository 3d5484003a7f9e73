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
matches and the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import OmegaConf

from xai_bench.config.schemas import (AttackSchema, AttributionSchema, CorruptionSchema, EarlyStoppingSchema,
                                      EnsembleSchema, GridSchema, ModelSchema, PathsSchema, QuickshiftSchema,
                                      SchedulerSchema, SegmentationSchema, SlicSchema, TrainerSchema)

# Nested schemas checked inside their parent's node (schema → field → schema of that field's mapping).
_NESTED: dict[type, dict[str, type]] = {
    AttributionSchema: {"segmentation": SegmentationSchema},
    SegmentationSchema: {"slic": SlicSchema, "quickshift": QuickshiftSchema, "grid": GridSchema},
}

__all__ = ["ConfigKeyError", "check_keys", "check_target", "unknown_key_message", "validate"]

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# attribute() arguments the attribution runner passes itself; in `kwargs` they would clash.
_RUNNER_ARGS = {"inputs", "target", "baselines", "feature_mask", "sliding_window_shapes", "strides"}
_CREATE_MODEL = "xai_bench.models.create_model"


class ConfigKeyError(ValueError):
    """Config keys that no schema or builder knows. ``problems`` holds one line per key."""

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
    if problems:
        raise ConfigKeyError(list(dict.fromkeys(problems)))  # a key off both schema and signature: said once


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


"""Config schemas and the start-up check of a composed config.

* :mod:`.schemas` — dataclasses for the groups whose files share a shape, stored in Hydra's ConfigStore as
  ``schema/<group>`` (``import xai_bench`` registers them, before any composition).
* :func:`validate` — run by every task before any data or model is built: schema nodes against their dataclass
  (keys Hydra let through with ``+key=…``), and every ``_target_`` node (``dataset``, ``optim``, ``scheduler``,
  ``logger``, attribution methods, attacks, corruptions) against its callable's signature; an attribution method's
  ``kwargs`` against its ``attribute()``; model options the named model would not use. One
  :class:`ConfigKeyError` names each bad key's config path, its close matches and the valid keys.
* :func:`check_values` — run first thing inside every task, before any data is loaded: values that cannot work
  (``optim.lr=-1``, ``trainer.max_epochs=0``, ``top_k=0``, unknown corruptions and severities, bad targets).
* :func:`load_node` — one group file merged onto its schema, outside a task (tests, notebooks).
* :data:`ATTRIBUTION_KEYS` — the keys of an attribution node (the runner's ``CONFIG_KEYS``).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from xai_bench.config.schemas import SCHEMAS, AttributionSchema, register
from xai_bench.config.validate import (ConfigKeyError, check_keys, check_target, check_values, unknown_key_message,
                                       validate)

__all__ = ["ATTRIBUTION_KEYS", "SCHEMAS", "ConfigKeyError", "check_keys", "check_target", "check_values", "load_node",
           "register",
           "unknown_key_message", "valid_keys", "validate"]

ATTRIBUTION_KEYS: tuple[str, ...] = tuple(f.name for f in fields(AttributionSchema))

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def valid_keys(group: str) -> list[str]:
    """The keys a node of ``group`` may have (``attribution``, ``attack``, …)."""
    return [f.name for f in fields(SCHEMAS[group])]


def load_node(group: str, name: str, conf_dir: str | Path | None = None) -> DictConfig:
    """``conf/<group>/<name>.yaml`` merged onto its schema, as a task would see it, without composing a task.

    ``load_node("attribution", "occlusion")`` has every attribution key, the schema's defaults where the file says
    nothing. Files of groups without a dataclass schema (``dataset``, ``optim``, ``logger``) come back as written.
    Only ``/schema/<group>@_here_``, ``/<group>/<other file>@_here_`` (a variant of a file of the same group) and
    ``_self_`` defaults are understood; compose anything else (an ensemble drawing its members from conf/model)
    within its task.
    """
    path = Path(conf_dir or CONF_DIR) / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(unknown_key_message(group, name, known, f"files in {path.parent}"))
    node = OmegaConf.load(path)
    schema, bases = None, []
    for entry in node.pop("defaults", []):
        if entry == "_self_":
            continue
        if isinstance(entry, str) and entry.startswith("/schema/"):
            schema = SCHEMAS[entry[len("/schema/"):].split("@", 1)[0]]
        elif isinstance(entry, str) and entry.startswith(f"/{group}/") and entry.endswith("@_here_"):
            # a variant of another file of the same group (e.g. rise_full on rise): that file, then this one
            bases.append(load_node(group, entry[len(group) + 2:-len("@_here_")], conf_dir))
        else:
            raise ValueError(f"{path}: the defaults entry {entry!r} needs Hydra; compose the file within its task")
    parts = [OmegaConf.structured(schema)] if schema is not None else []
    return OmegaConf.merge(*parts, *bases, node) if parts or bases else node

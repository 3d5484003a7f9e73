"""The config schemas (xai_bench.config): every group file composes against its schema, and a misspelt or useless
key fails before any work, naming its config path, the close matches and the valid keys."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import xai_bench  # noqa: F401  (registers the schemas, patches torchvision)
from xai_bench.config import (ATTRIBUTION_KEYS, SCHEMAS, ConfigKeyError, check_target, load_node, valid_keys,
                              validate)
from xai_bench.config.schemas import ModelSchema

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# The task that composes each group with a dataclass schema, and where the node lands in it.
SCHEMA_GROUPS = {"attribution": "explain", "attack": "attack", "corruption": "evaluate", "model": "train",
                 "trainer": "train", "ensemble": "evaluate", "scheduler": "train", "paths": "train"}
# Groups whose schema is their `_target_` callable's signature.
TARGET_GROUPS = {"dataset": "train", "optim": "train", "logger": "train", "metric": "explain"}
NEEDS_VALUE = {("model", "checkpoint"): ["model.path=/x"], ("dataset", "imagefolder"): ["dataset.root=/x"],
               ("dataset", "images"): ["dataset.root=/x"], ("dataset", "tensors"): ["dataset.path=/x"]}


def _files(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _node(cfg, group: str, name: str):
    if group in ("attribution", "metric"):  # multi-select groups: one node per file at <group>.<name>
        return cfg[group][name]
    return OmegaConf.select(cfg, group)


# ---------------------------------------------------------------------------------------------------- composition
def test_every_group_has_a_schema():
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    global_groups = {"task", "experiment", "debug", "hparams_search", "metric_suite"}  # _global_ patches: no node
    assert groups == set(SCHEMA_GROUPS) | set(TARGET_GROUPS) | global_groups | {"hydra"}
    assert set(SCHEMAS) == set(SCHEMA_GROUPS)


@pytest.mark.parametrize("group,name", [(g, n) for g in SCHEMA_GROUPS for n in _files(g)])
def test_schema_group_files_compose_onto_their_schema(group, name, compose, tmp_path):
    raw = OmegaConf.load(CONF_DIR / group / f"{name}.yaml")
    assert f"/schema/{group}@_here_" in list(raw.get("defaults", [])), "the file must name its schema first"
    assert raw.defaults[-1] == "_self_"
    cfg = compose(SCHEMA_GROUPS[group], [f"{group}={name}", *NEEDS_VALUE.get((group, name), [])], tmp_path)
    node = _node(cfg, group, name)
    assert OmegaConf.get_type(node) is SCHEMAS[group]
    assert set(node) == set(valid_keys(group))  # the schema's defaults fill what the file leaves out
    validate(cfg)
    if group != "ensemble":  # ensembles draw their members from conf/model: only composition places them
        loaded = load_node(group, name)
        assert OmegaConf.get_type(loaded) is SCHEMAS[group]
        if (group, name) not in NEEDS_VALUE and group != "paths":  # (overridden above)
            assert OmegaConf.to_container(loaded) == OmegaConf.to_container(node)


@pytest.mark.parametrize("group,name", [(g, n) for g in TARGET_GROUPS for n in _files(g)])
def test_target_group_files_match_their_builders_signature(group, name, compose, tmp_path):
    choice = f"[{name}]" if group == "metric" else name
    cfg = compose(TARGET_GROUPS[group], [f"{group}={choice}", *NEEDS_VALUE.get((group, name), [])], tmp_path)
    node = _node(cfg, group, name)
    importlib.import_module(node._target_.rsplit(".", 1)[0])  # a broken _target_ fails here, it is never skipped
    check_target(node, group)
    validate(cfg)


def test_builders_take_only_the_keys_they_use():
    """No dataset builder swallows unknown keys: the signature is the dataset group's schema."""
    from xai_bench import data

    for name in _files("dataset"):
        fn = getattr(data, OmegaConf.load(CONF_DIR / "dataset" / f"{name}.yaml")._target_.rsplit(".", 1)[1])
        assert all(p.kind is not p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()), name
    from xai_bench.models import create_model

    assert all(p.kind is not p.VAR_KEYWORD for p in inspect.signature(create_model).parameters.values())


def test_schemas_agree_with_the_code_that_reads_them():
    from xai_bench.attribution.runner import CONFIG_KEYS
    from xai_bench.models import create_model

    assert set(ATTRIBUTION_KEYS) == set(CONFIG_KEYS)
    params = inspect.signature(create_model).parameters
    fields = {f.name: f.default for f in dataclasses.fields(ModelSchema) if f.name != "_target_"}
    assert set(fields) == set(params)
    assert all(fields[k] == params[k].default for k in fields if k != "name")


# ---------------------------------------------------------------------------------------------- misspelt keys
# (task, extra overrides, misspelt key, the key meant) for every group with a schema or a signature
MISSPELT = [
    ("explain", [], "attribution.saliency.layr", "layer"),
    ("attack", [], "attack.target_clas", "target_class"),
    ("evaluate", [], "corruption.severites", "severities"),
    ("evaluate", [], "model.pretraned", "pretrained"),
    ("train", [], "trainer.max_epoch", "max_epochs"),
    ("train", [], "trainer.early_stopping.patiense", "patience"),
    ("train", [], "scheduler.intervall", "interval"),
    ("evaluate", ["ensemble=efficientnet_lite"], "ensemble.max_figure", "max_figures"),
    ("train", [], "dataset.image_sise", "image_size"),
    ("train", [], "optim.momentun", "momentum"),
    ("explain", [], "attribution.integrated_gradients.kwargs.n_step", "n_steps"),
    ("attack", ["attack=pgd_linf"], "attack.method.stepz", "steps"),
    ("explain", ["attribution=lime"], "attribution.lime.segmentation.slic.n_segmnts", "n_segments"),
    ("explain", ["attribution=lime"], "attribution.lime.segmentation.quickshift.kernel_sise", "kernel_size"),
]


@pytest.mark.parametrize("task,extra,key,meant", MISSPELT, ids=[m[2] for m in MISSPELT])
def test_misspelt_override_fails_at_composition(task, extra, key, meant, compose, tmp_path):
    """A plain `key=value` override of a key the node does not have: Hydra refuses it and names the key."""
    with pytest.raises(ConfigCompositionException) as err:
        compose(task, [*extra, f"{key}=1"], tmp_path)
    assert key in str(err.value)


@pytest.mark.parametrize("task,extra,key,meant", MISSPELT, ids=[m[2] for m in MISSPELT])
def test_misspelt_added_key_fails_before_any_work(task, extra, key, meant, compose, tmp_path, monkeypatch):
    """`+key=value` gets past Hydra; the task's start-up check refuses it, before any data, model or file."""
    module = importlib.import_module(f"xai_bench.tasks.{task}")

    def no_work(*_, **__):
        raise AssertionError("data was built before the config was checked")

    monkeypatch.setattr(module, "build_data", no_work)
    cfg = compose(task, [*extra, f"+{key}=1"], tmp_path / "run")
    with pytest.raises(ConfigKeyError) as err:
        module.run(cfg)
    message = str(err.value)
    assert message.startswith(f"{key}: unknown key") and f"Did you mean {meant}" in message
    assert "Valid keys:" in message and meant in message.split("Valid keys:")[1]
    assert not (tmp_path / "run").exists()  # nothing written, no tracker started


def test_a_key_that_does_nothing_for_a_dataset_fails(compose, tmp_path):
    from xai_bench import data

    cfg = compose("train", ["dataset=mnist", "+dataset.n_train=256"], tmp_path)
    with pytest.raises(ConfigKeyError, match=r"dataset\.n_train: unknown key for xai_bench\.data\.mnist.*root"):
        validate(cfg)
    # MNIST's images are 28×28: a different image_size would be silently ignored, so it fails, before any file is read
    # (the folder does not exist: a FileNotFoundError would mean the data was looked for first)
    with pytest.raises(ValueError, match=r"dataset.image_size=64 does nothing for 'mnist'"):
        data.mnist(root=str(tmp_path / "nothing"), image_size=64)
    with pytest.raises(ValueError, match=r"dataset.num_classes=6 does nothing for 'cifar10'"):
        data.cifar10(root=str(tmp_path / "nothing"), num_classes=6)
    with pytest.raises(TypeError):
        data.samples(names=None, image_size=64)  # type: ignore[call-arg]  (no **kwargs to drop it into)


def test_model_options_a_model_does_not_use_fail(compose, tmp_path):
    from xai_bench.models import create_model, model_options

    assert "dropout" in model_options("small_cnn") and "dropout" not in model_options("efficientnet_lite0")
    assert "arch" in model_options("timm/resnet18") and model_options("checkpoint") == ("path", "num_classes")
    cfg = compose("evaluate", ["model.dropout=0.3", "+model@reference_model=small_cnn",
                               "reference_model.pretrained=true"], tmp_path)
    with pytest.raises(ConfigKeyError) as err:
        validate(cfg)
    assert err.value.problems[0].startswith("model.dropout: model 'efficientnet_lite0' does not use 'dropout'")
    assert err.value.problems[1].startswith("reference_model.pretrained: model 'small_cnn' does not use")
    with pytest.raises(ValueError, match=r"does not use option\(s\) \['dropout'\]"):
        create_model("efficientnet_lite0", dropout=0.3)
    with pytest.raises(ValueError, match="model.arch is for timm / torchvision"):
        create_model("small_cnn", num_classes=3, arch="resnet18")
    assert create_model("timm", arch="test_efficientnet", num_classes=3).name == "timm/test_efficientnet"


def test_every_problem_is_reported_at_once(compose, tmp_path):
    cfg = compose("explain", ["+attribution.saliency.windw=8", "+attribution.gradcam.kwargs.relu=true",
                              "+dataset.nmes=[chelsea]"], tmp_path)
    with pytest.raises(ConfigKeyError) as err:
        validate(cfg)
    assert [p.split(":")[0] for p in err.value.problems] == [
        "attribution.saliency.windw", "attribution.gradcam.kwargs.relu", "dataset.nmes"]
    assert str(err.value).startswith("3 config problems")


def test_programmatic_nodes_are_checked_too():
    """Nodes written in Python (no schema merged in): list-form ensemble members, nested `_target_` nodes."""
    cfg = {"ensemble": {"members": [{"name": "checkpoint", "path": "/x", "label": "a"},
                                    {"name": "efficientnet_lite0", "pretraind": True}], "combine": ["mean"]},
           "corruption": {"names": [], "custom": {"blur": {"_target_": "xai_bench.robustness.corruptions.gaussian_blur",
                                                           "_partial_": True, "radius": 2, "sigmaa": 1}}},
           "dataset": {"_target_": "xai_bench.data.nowhere"}}
    with pytest.raises(ConfigKeyError) as err:
        validate(cfg)
    lines = err.value.problems
    assert lines[0].startswith("corruption.custom.blur.sigmaa: unknown key")
    assert lines[1].startswith("ensemble.members[1].pretraind: unknown key") and "Did you mean pretrained" in lines[1]
    assert lines[2].startswith("dataset._target_: cannot import 'xai_bench.data.nowhere'")


# ------------------------------------------------------------------------------------------- presets, sweeps
@pytest.mark.parametrize("task", ["train", "evaluate", "explain", "attack"])
@pytest.mark.parametrize("preset", ["default", "limit"])
def test_debug_presets_fit_every_task(task, preset, compose, tmp_path):
    base = compose(task, [], tmp_path)
    cfg = compose(task, [f"debug={preset}"], tmp_path)
    validate(cfg)
    assert cfg.logger._target_.endswith("NullTracker") and cfg.task_name == task
    if task == "train":
        assert cfg.trainer.max_epochs < base.trainer.max_epochs and cfg.trainer.limit_train_batches
    else:
        assert cfg.max_images and (base.max_images is None or cfg.max_images < base.max_images)


def test_hparams_search_space_and_metric_exist(compose, tmp_path, tiny_train_overrides):
    """Without the Optuna plugin the file cannot compose, but what it names is checked: each searched key exists in
    the train config and `optimized_metric` is a metric train returns."""
    from xai_bench.tasks import train

    search = OmegaConf.load(CONF_DIR / "hparams_search" / "train_optuna.yaml")
    cfg = compose("train", [*tiny_train_overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=3"], tmp_path)
    for key in search.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    metrics = train.run(cfg)
    assert isinstance(metrics[search.optimized_metric], float)


def test_hparams_search_composes_with_the_optuna_sweeper():
    # only the plugin's absence skips; a broken file or _target_ fails
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the `sweeps` extra is not installed")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["hparams_search=train_optuna", "paths.output_dir=unused"], return_hydra_config=True)
    assert cfg.optimized_metric == "best/val/acc" and cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert set(cfg.hydra.sweeper.params) >= {"optim.lr"}
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    validate(cfg)

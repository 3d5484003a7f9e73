"""Config schemas: defaults in one place, types checked, and a misspelt key in any group fails before any work."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hydra.errors import ConfigCompositionException

import xai_bench  # noqa: F401  (registers the schemas)
from xai_bench.config import ConfigKeyError, check_keys, valid_keys, validate
from xai_bench.config.schemas import SCHEMAS, AttributionSchema
from xai_bench.tasks import attack, evaluate, explain, train

TASK_OF = {"attribution": "explain", "attack": "attack", "corruption": "evaluate", "model": "train",
           "trainer": "train"}
# A real key of each schema'd group, misspelt.
MISSPELT = {"attribution": ("attribution.occlusion.windw=8", "windw"), "attack": ("attack.epss=[0]", "epss"),
            "corruption": ("corruption.severites=[1]", "severites"), "model": ("model.num_clases=3", "num_clases"),
            "trainer": ("trainer.max_epoch=1", "max_epoch")}


@pytest.mark.parametrize("group", sorted(MISSPELT))
def test_misspelt_key_on_the_command_line_fails_at_composition(group, compose, tmp_path):
    override, key = MISSPELT[group]
    with pytest.raises(ConfigCompositionException) as info:
        compose(TASK_OF[group], [override], tmp_path)
    text = f"{info.value} {info.value.__cause__}"
    assert key in text and SCHEMAS[group].__name__ in text  # names the key and the schema it is not in
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing was written


def test_misspelt_key_in_a_yaml_file_fails_at_composition(compose, tmp_path):
    conf = tmp_path / "conf" / "attribution"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text("# @package attribution.typo\ndefaults:\n  - /schema/attribution@_here_\n"
                                    "  - _self_\nname: typo\nmethod: {_target_: captum.attr.Saliency, _partial_: true}\n"
                                    "chanel_reduction: mean\n")
    with pytest.raises(ConfigCompositionException, match="chanel_reduction"):
        compose("explain", [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "attribution=[typo]"], tmp_path / "o")


def test_wrong_type_fails_at_composition(compose, tmp_path):
    with pytest.raises(ConfigCompositionException, match="window"):
        compose("explain", ["attribution.occlusion.window=wide"], tmp_path)


def test_schema_defaults_fill_what_a_yaml_leaves_out(compose, tmp_path):
    node = compose("explain", ["attribution=[saliency]"], tmp_path).attribution.saliency
    assert set(node) == {f.name for f in fields(AttributionSchema)}
    assert node.layer is None and node.upsample is False and node.forgrad_sigma is None  # not written in the YAML
    assert valid_keys("attribution") == [f.name for f in fields(AttributionSchema)]


@pytest.mark.parametrize("task,override,path", [
    ("train", "+dataset.n_trian=10", "dataset.n_trian"),
    ("explain", "+dataset.image_size=32", "dataset.image_size"),  # samples photos keep their own sizes
    ("train", "+optim.momentun=0.5", "optim.momentun"),
    ("train", "+logger.projct=x", "logger.projct"),
    ("train", "+scheduler.scheduler.pct_strat=0.3", "scheduler.scheduler.pct_strat"),
])
def test_builder_keys_are_checked_before_any_work(task, override, path, compose, tmp_path):
    """Groups whose files call different builders are checked against the builder's signature when the task
    starts: the error names the config path and lists the valid keys, and nothing is written."""
    cfg = compose(task, [override], tmp_path / "out")
    run = {"train": train.run, "explain": explain.run}[task]
    with pytest.raises(ConfigKeyError, match=rf"{path}: unknown key.*Valid keys: "):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_close_matches_are_suggested():
    with pytest.raises(ConfigKeyError, match=r"dataset\.n_tran: unknown key.*Did you mean n_train"):
        check_keys("dataset", ["n_tran"], ["n_train", "n_val", "seed"])


def test_a_fact_that_does_nothing_fails(tmp_path):
    from xai_bench import data

    with pytest.raises(ValueError, match=r"dataset\.num_classes=5 does nothing for 'digits'"):
        data.digits(num_classes=5)
    assert data.digits(num_classes=10).num_classes == 10


def test_validate_accepts_every_shipped_task_config(compose, tmp_path):
    for task in ("train", "evaluate", "explain", "attack"):
        validate(compose(task, [], tmp_path))
    for dataset in ("synthetic_shapes", "digits", "fashion_mnist", "mnist", "cifar10", "samples"):
        validate(compose("train", [f"dataset={dataset}"], tmp_path))
    for scheduler in ("onecycle", "cosine", "step", "none"):
        validate(compose("train", [f"scheduler={scheduler}"], tmp_path))


def test_ensemble_members_and_reference_model_reuse_conf_model(compose, tmp_path):
    cfg = compose("evaluate", ["ensemble=efficientnet_lite", "+model@reference_model=efficientnet_lite1"], tmp_path)
    members = cfg.ensemble.members
    assert list(members) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert all(m._target_ == "xai_bench.models.create_model" and m.pretrained for m in members.values())
    assert cfg.reference_model.name == "efficientnet_lite1" and cfg.reference_model.pretrained
    tv = compose("evaluate", ["ensemble=torchvision_imagenet"], tmp_path).ensemble.members
    assert tv.efficientnet_b5.name == "torchvision/efficientnet_b5" and tv.efficientnet_b5.input_size == 456


@pytest.mark.parametrize("task", ["train", "evaluate", "explain", "attack"])
def test_debug_preset_composes_for_every_task(task, compose, tmp_path):
    cfg = compose(task, ["debug=default"], tmp_path)
    assert cfg.logger._target_.endswith("NullTracker")
    if task == "train":
        assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 5
    else:
        assert cfg.max_images == 2 and cfg.progress is False


def test_debug_preset_runs_evaluate_and_attack(compose, tmp_path):
    m = evaluate.run(compose("evaluate", ["debug=default"], tmp_path / "evaluate"))
    assert m["n"] == 2
    m = attack.run(compose("attack", ["debug=default"], tmp_path / "attack"))
    assert m["eps_sweep"][0]["n"] == 2


@pytest.mark.slow
def test_debug_preset_runs_explain(compose, tmp_path):
    m = explain.run(compose("explain", ["debug=default"], tmp_path))
    assert m["n_images"] == 2 and m["methods"] == ["saliency", "integrated_gradients", "gradcam", "occlusion"]


def test_optimized_metric_is_what_the_entry_point_returns(compose, tmp_path, tiny_train_overrides):
    """`optimized_metric` names a metric the task really returns (the Optuna sweeper maximises it)."""
    cfg = compose("train", ["hparams_search=train_optuna", *tiny_train_overrides, "trainer.max_epochs=1"], tmp_path)
    assert cfg.optimized_metric == "best/val/acc"
    metrics = train.run(cfg)
    assert isinstance(metrics[cfg.optimized_metric], float) and metrics["objective"] == metrics["best/val/acc"]

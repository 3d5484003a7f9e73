"""Config checks seen from the user: a typo in a YAML file, a wrong type, schema defaults, presets that run."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hydra.errors import ConfigCompositionException

import xai_bench  # noqa: F401  (registers the schemas)
from xai_bench.config import valid_keys
from xai_bench.config.schemas import AttributionSchema
from xai_bench.tasks import attack, evaluate, explain

def test_misspelt_key_in_a_yaml_file_fails_at_composition(compose, tmp_path):
    conf = tmp_path / "conf" / "attribution"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text(
        "# @package attribution.typo\ndefaults:\n  - /schema/attribution@_here_\n  - _self_\nname: typo\n"
        "method: {_target_: captum.attr.Saliency, _partial_: true}\nchanel_reduction: mean\n")
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


def test_a_fact_that_does_nothing_fails(tmp_path):
    from xai_bench import data

    with pytest.raises(ValueError, match=r"dataset\.num_classes=5 does nothing for 'digits'"):
        data.digits(num_classes=5)
    assert data.digits(num_classes=10).num_classes == 10


def test_ensemble_members_and_reference_model_reuse_conf_model(compose, tmp_path):
    cfg = compose("evaluate", ["ensemble=efficientnet_lite", "+model@reference_model=efficientnet_lite1"], tmp_path)
    members = cfg.ensemble.members
    assert list(members) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert all(m._target_ == "xai_bench.models.create_model" and m.pretrained for m in members.values())
    assert cfg.reference_model.name == "efficientnet_lite1" and cfg.reference_model.pretrained
    tv = compose("evaluate", ["ensemble=torchvision_imagenet"], tmp_path).ensemble.members
    assert tv.efficientnet_b5.name == "torchvision/efficientnet_b5" and tv.efficientnet_b5.input_size == 456


def test_debug_preset_runs_evaluate_and_attack(compose, tmp_path):
    m = evaluate.run(compose("evaluate", ["debug=default"], tmp_path / "evaluate"))
    assert m["n"] == 2
    m = attack.run(compose("attack", ["debug=default"], tmp_path / "attack"))
    assert m["eps_sweep"][0]["n"] == 2


@pytest.mark.slow
def test_debug_preset_runs_explain(compose, tmp_path):
    m = explain.run(compose("explain", ["debug=default"], tmp_path))
    assert m["n_images"] == 2 and m["methods"] == ["saliency", "integrated_gradients", "gradcam", "occlusion"]



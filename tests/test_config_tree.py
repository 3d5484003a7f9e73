"""Contract tests over the config tree: every file composes, and every buildable node builds."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from xai_bench.utils import build

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

TASKS = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
# experiments compose under their own task in test_experiments.py
GROUP_FILES = sorted((p.parent.name, p.stem) for p in CONF_DIR.glob("*/*.yaml")
                     if p.parent.name not in ("hydra", "experiment"))
TASK_OF_GROUP = {"dataset": "train", "model": "train", "trainer": "train", "optim": "train", "scheduler": "train",
                 "logger": "train", "paths": "train", "debug": "train", "experiment": "train",
                 "hparams_search": "train", "corruption": "evaluate", "attribution": "explain", "attack": "attack",
                 "ensemble": "evaluate", "metric": "explain", "metric_suite": "explain", "explain": "explain"}
NEEDS_VALUE = {("dataset", "imagefolder"): ["dataset.root=/nonexistent"], ("dataset", "images"): ["dataset.root=/x"],
               ("model", "checkpoint"): ["model.path=/x"]}


@pytest.mark.parametrize("task", TASKS)
def test_task_configs_compose(task, compose, tmp_path):
    cfg = compose(task, [], tmp_path)
    assert cfg.task_name == task and cfg.paths.output_dir == str(tmp_path)


@pytest.mark.parametrize("group,name", GROUP_FILES)
def test_every_group_file_composes(group, name, compose, tmp_path):
    from xai_bench.config import validate

    if group == "hparams_search":  # its sweeper is a plugin of the optional `sweeps` extra; nothing else skips
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the `sweeps` extra is not installed")
    task = name if group == "task" else TASK_OF_GROUP.get(group, "train")
    if group == "hparams_search":  # a search belongs to the task its name starts with (train_optuna, explain_…)
        task = name.split("_")[0]
    if not (CONF_DIR / f"{task}.yaml").exists():
        pytest.skip(f"task config {task}.yaml not present")
    overrides = NEEDS_VALUE.get((group, name), [])
    cfg = compose(task, [f"{group}={name}", *overrides], tmp_path)
    OmegaConf.to_container(cfg, resolve=False)
    # Everything except hydra-runtime values resolves.
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    validate(cfg)  # and passes the start-up check: every key known to its schema or its builder


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "debug").glob("*.yaml")))
def test_every_task_composes_with_every_debug_preset(task, preset, compose, tmp_path):
    from xai_bench.config import validate

    cfg = compose(task, [f"debug={preset}"], tmp_path)
    assert cfg.task_name == task
    validate(cfg)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizers_build(name):
    node = OmegaConf.load(CONF_DIR / "optim" / f"{name}.yaml")
    opt = build(node)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Optimizer)


@pytest.mark.parametrize("name", ["cosine", "step", "none"])
def test_schedulers_build(name, compose, tmp_path):
    cfg = compose("train", [f"scheduler={name}"], tmp_path)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    sched = build(cfg.scheduler.scheduler)
    assert sched is None if name == "none" else sched(opt).get_last_lr() == [0.1]


@pytest.mark.parametrize("name", ["wandb", "none"])
def test_loggers_build(name, compose, tmp_path):
    from xai_bench.tracking import Tracker

    cfg = compose("train", [f"logger={name}"], tmp_path)
    assert isinstance(build(cfg.logger), Tracker)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_every_model_config_builds(name, compose, tmp_path):
    from xai_bench.data import synthetic_shapes
    from xai_bench.tasks.setup import build_model

    if name == "checkpoint":
        from xai_bench.models import create_model, save_checkpoint

        save_checkpoint(create_model("small_cnn", num_classes=6, input_size=32), tmp_path / "ck")
        overrides = [f"model.path={tmp_path / 'ck'}"]
    elif name == "onnx":
        pytest.importorskip("onnx2torch", reason="pip install 'xai-bench[onnx]'")
        from xai_bench.models import create_model

        net = create_model("small_cnn", num_classes=6, input_size=32).eval()
        torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17)
        overrides = [f"model.path={tmp_path / 'm.onnx'}"]
    else:
        overrides = []
    cfg = compose("train", [f"model={name}", "dataset.image_size=32", *overrides], tmp_path)
    data = None if cfg.model.get("pretrained") else synthetic_shapes(n_train=0, n_val=0, n_test=2, image_size=32)
    model = build_model(cfg, data)
    c, h, w = model.input_size
    with torch.no_grad():
        out = model.eval()(torch.rand(1, c, h, w))
    assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml")))
def test_every_dataset_config_builds_or_explains(name, compose, tmp_path):
    """Datasets that need files fail with an error naming the config field and the fix."""
    from xai_bench.tasks.setup import build_data

    overrides = {"imagefolder": [f"dataset.root={tmp_path / 'none'}"], "images": [f"dataset.root={tmp_path / 'none'}"],
                 "synthetic_shapes": ["dataset.n_train=8", "dataset.n_val=4", "dataset.n_test=4"],
                 "tensors": [f"dataset.path={tmp_path / 'none.safetensors'}"]}.get(name, [])
    cfg = compose("train", [f"dataset={name}", f"paths.data_dir={tmp_path / 'data'}", *overrides], tmp_path)
    if name in ("mnist", "cifar10") or (name == "fashion_mnist" and not Path("/usr/share/datasets/fashion-mnist")
                                         .is_dir()):
        with pytest.raises(FileNotFoundError, match="dataset.download=true"):
            build_data(cfg)
    elif name in ("imagefolder", "images"):
        with pytest.raises(FileNotFoundError, match="dataset.root"):
            build_data(cfg)
    elif name == "tensors":
        with pytest.raises(FileNotFoundError, match="dataset.path"):
            build_data(cfg)
    else:
        data = build_data(cfg)
        split = data.test if data.test is not None else data.train
        assert len(split) > 0 and data.num_classes == len(data.class_names)


def test_unknown_group_option_lists_choices(compose, tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="small_cnn"):
        compose("train", ["model=smal_cnn"], tmp_path)

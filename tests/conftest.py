"""Shared fixtures: W&B off, Hydra state cleared, config composition pointed at tmp_path, tiny models and data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import xai_bench  # noqa: F401  (torchvision patch before anything imports it)
from xai_bench.accel import keep_freed_cpu_memory

keep_freed_cpu_memory()  # the allocator setting every task makes (xai_bench.distributed.setup_job)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    yield


@pytest.fixture(autouse=True)
def _clear_hydra():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def compose_cfg(task: str, overrides: list[str], out_dir: Path | str):
    """Compose ``conf/<task>.yaml`` with overrides, its outputs under ``out_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=task, overrides=[f"paths.output_dir={out_dir}", *overrides])


@pytest.fixture
def compose():
    return compose_cfg


def attribution_node(name_or_path: str | Path):
    """``conf/attribution/<name>.yaml`` composed as Hydra composes it (schema defaults filled in), as a plain node."""
    from omegaconf import OmegaConf

    name = Path(str(name_or_path)).stem
    cfg = compose_cfg("explain", [f"attribution=[{name}]"], ".")
    return OmegaConf.create(OmegaConf.to_container(cfg.attribution[name], resolve=True))


@pytest.fixture(name="attribution_node")
def _attribution_node():
    return attribution_node


# Overrides that make train.py take seconds: tiny synthetic data, one or two epochs, no tracker.
TINY_TRAIN = ["dataset.n_train=192", "dataset.n_val=64", "dataset.n_test=64", "dataset.image_size=32",
              "trainer.batch_size=32", "trainer.eval_batch_size=64", "trainer.progress=false", "logger=none"]


@pytest.fixture
def tiny_train_overrides():
    return list(TINY_TRAIN)


@pytest.fixture
def tiny_classifier():
    """A small ImageClassifier (3×32×32 → 3 classes) with a conv layer Grad-CAM can use."""
    from xai_bench.models import create_model

    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=3, in_chans=3, input_size=32).eval()


# One intra-op thread: the tensors in tests are tiny, and OpenMP threads spin-waiting on a shared 2-core machine made
# some tests 20-40x slower than single-threaded.
torch.set_num_threads(1)


_L2X_CACHE: dict[tuple[int, int], str] = {}


def untrained_l2x(channels: int, size: int) -> str:
    """An L2X explainer checkpoint with random weights (what ``train.py task=l2x`` writes into ``best/``), written
    once per session and shape into a temporary folder removed at exit."""
    import atexit
    import shutil
    import tempfile

    from xai_bench.models import save_checkpoint
    from xai_bench.models.l2x import l2x

    if (channels, size) not in _L2X_CACHE:
        folder = tempfile.mkdtemp(prefix="l2x-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        with torch.random.fork_rng():  # the caller's random stream is left alone
            torch.manual_seed(0)
            net = l2x(num_classes=3, in_chans=channels, input_size=size)
        _L2X_CACHE[channels, size] = str(save_checkpoint(net, folder))
    return _L2X_CACHE[channels, size]


def headless_chromium(window_size: str = "1400,2400"):
    """Selenium on Debian's ``chromium`` + ``chromedriver`` (installed by ``.ci/run``; nothing is downloaded), headless.
    Skips the calling test when either is missing. The caller quits the returned driver."""
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_bin = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(chromium).is_file() and Path(driver_bin).is_file()):
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={window_size}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_bin), options=opts)

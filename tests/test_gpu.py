"""GPU paths: bf16 autocast + channels_last training, AMP explanations, attacks on the device. Skipped without CUDA."""

import json

import pytest
import torch

from xai_bench.tasks import attack, explain, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_train_with_amp_and_channels_last_on_gpu(compose, tmp_path, tiny_train_overrides):
    metrics = train.run(compose("train", [*tiny_train_overrides, "trainer.max_epochs=2", "device=cuda"], tmp_path))
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["device"].startswith("cuda") and "gpu" in res["versions"]
    assert metrics["history"][-1]["train/loss"] < metrics["history"][0]["train/loss"] * 1.5
    assert torch.isfinite(torch.tensor(metrics["history"][-1]["val/loss"]))


def test_explain_amp_matches_fp32_closely_on_gpu(compose, tmp_path):
    base = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=4",
            "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false", "attribution=occlusion",
            "attribution.window=8", "attribution.stride=4", "device=cuda"]
    from safetensors.torch import load_file

    explain.run(compose("explain", base, tmp_path / "fp32"))
    explain.run(compose("explain", [*base, "amp=true"], tmp_path / "amp"))
    a = load_file(str(tmp_path / "fp32" / "maps.safetensors"))["occlusion"]
    b = load_file(str(tmp_path / "amp" / "maps.safetensors"))["occlusion"]
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert cos > 0.95


def test_attack_on_gpu_agrees_with_cpu(compose, tmp_path):
    base = ["dataset=synthetic_shapes", "dataset.n_train=0", "dataset.n_val=0", "dataset.n_test=8",
            "dataset.image_size=32", "model=small_cnn", "logger=none", "progress=false", "attack=fgsm"]
    cpu = attack.run(compose("attack", [*base, "device=cpu"], tmp_path / "cpu"))
    gpu = attack.run(compose("attack", [*base, "device=cuda"], tmp_path / "gpu"))
    assert cpu["clean_accuracy"] == gpu["clean_accuracy"]
    assert abs(cpu["objective"] - gpu["objective"]) <= 1 / 8 + 1e-9  # at most one borderline image may differ

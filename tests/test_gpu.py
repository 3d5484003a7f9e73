"""GPU paths: bf16 autocast + channels_last training, AMP explanations, attacks on the device, the fast forward-only
paths (channels_last, bf16, torch.compile, OOM halving under a memory cap) and the benchmark runner. Skipped without
CUDA."""

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


# -- speed paths of forward-only work (xai_bench/accel.py) and the benchmark runner on the GPU ---------------------
def test_fast_forward_channels_last_and_bf16_on_gpu_match_fp32():
    from xai_bench.accel import fast_forward
    from xai_bench.models import create_model

    model = create_model("torchvision", arch="resnet18", num_classes=10, input_size=64).cuda().eval()
    x = torch.rand(8, 3, 64, 64, device="cuda")
    with torch.no_grad():
        ref = model(x).float()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with fast_forward(model, "cuda"):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) and torch.is_inference_mode_enabled()
        out = model(x).float()
    with fast_forward(model, "cuda", amp=True):
        half = model(x).float()
    assert conv.weight.is_contiguous()  # restored
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(half.flatten(), ref.flatten(), dim=0) > 0.99


def test_compile_model_on_gpu_matches_eager():
    from xai_bench.accel import compile_model
    from xai_bench.models import create_model

    model = create_model("small_cnn", num_classes=6, in_chans=3, input_size=32).cuda().eval()
    compiled = compile_model(model)  # None: on by default on CUDA
    assert compiled is not model
    x = torch.rand(16, 3, 32, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-3, atol=1e-3)


def test_occlusion_and_feature_ablation_on_gpu_agree_with_cpu(attribution_node):
    from xai_bench.attribution.runner import build_attribution
    from xai_bench.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=6, in_chans=3, input_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    for name in ("occlusion", "feature_ablation"):  # deterministic: the same maps on both devices
        cfg = attribution_node(name)
        cpu = build_attribution(cfg, model).attribute(x, [0, 1])
        gpu = build_attribution(cfg, model.cuda()).attribute(x.cuda(), [0, 1]).cpu()
        model.cpu()
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)


def test_lime_and_kernel_shap_on_gpu_agree_with_cpu(attribution_node):
    """The batched LIME / Kernel SHAP draw their coalitions on the CPU generator on either device, so with the same
    seed the GPU maps are the CPU maps up to the model's float differences (TF32 convolutions on the GPU)."""
    from xai_bench.attribution.runner import build_attribution
    from xai_bench.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=6, in_chans=3, input_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    for name in ("lime", "kernel_shap"):
        cfg = attribution_node(name)
        cfg.kwargs.n_samples = 64
        if name == "lime":  # the config's Lasso (alpha 0.01) zeroes every coefficient of this random model
            cfg.method.interpretable_model.alpha = 1e-4
        torch.manual_seed(0)
        cpu = build_attribution(cfg, model).attribute(x, [0, 1])
        assert cpu.abs().max() > 0, name
        torch.manual_seed(0)
        gpu = build_attribution(cfg, model.cuda()).attribute(x.cuda(), [0, 1]).cpu()
        model.cpu()
        assert gpu.device.type == "cpu" and torch.isfinite(gpu).all()
        torch.testing.assert_close(gpu, cpu, rtol=1e-2, atol=1e-2 * float(cpu.abs().max()), msg=name)


def test_inner_batch_halving_under_a_real_gpu_memory_cap(attribution_node):
    """IG asked for all 512 interpolated ResNet-18 images (128²) in one pass under a 1 GB cap (~10 GB needed): the
    runner halves the inner batch instead of crashing, and the maps equal a run with a small inner batch."""
    from xai_bench.attribution.runner import build_attribution
    from xai_bench.models import create_model

    model = create_model("torchvision", arch="resnet18", num_classes=10, input_size=128).cuda().eval()
    x = torch.rand(1, 3, 128, 128, device="cuda")
    cfg = attribution_node("integrated_gradients")
    cfg.kwargs.n_steps = 512
    cfg.kwargs.internal_batch_size = 16
    ref = build_attribution(cfg, model).attribute(x, 3)
    cfg.kwargs.internal_batch_size = 4096
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2**30 / total))
    try:
        ex = build_attribution(cfg, model)
        out = ex.attribute(x, 3)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert ex._inner_limits["internal_batch_size"] < 4096
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-5)


def test_benchmark_runner_smoke_on_gpu_with_amp(tmp_path):
    import sys
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench_dir))
    try:
        import run as bench

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(bench_dir / "conf"), version_base=None):
            cfg = compose(config_name="run", overrides=[
                "mode=smoke", "device=cuda", "amp=true", f"out_dir={tmp_path}", "quality=false",
                "ops=[occlusion,integrated_gradients,rise,fgsm_sweep,imagenet_c,ig_memory_cap]"])
        GlobalHydra.instance().clear()
        res = bench.run(cfg)
    finally:
        sys.path.remove(str(bench_dir))
    assert res["environment"]["device"].startswith("cuda")
    for reg in res["regimes"].values():
        rows = {r["operation"]: r for r in reg["rows"]}
        assert rows["Occlusion"]["ours_peak_mb"] > 0 and rows["Occlusion"]["efficiency"] > 0
        assert "finished under a 16 GB cap" in rows["IG memory cap"]["note"]

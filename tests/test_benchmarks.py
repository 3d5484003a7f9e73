"""benchmarks/run.py at toy sizes (mode=smoke): every code path runs, the tables hold what the issue asks for, and a
missing peer library is skipped with a note instead of failing the run. Its times mean nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench_run():
    sys.path.insert(0, str(BENCH))
    try:
        import run as bench

        yield bench
    finally:
        sys.path.remove(str(BENCH))


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(BENCH / "conf"), version_base=None):
            return compose(config_name="run", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def test_quick_and_full_modes_compose():
    quick = _compose([])
    full = _compose(["mode=full"])
    assert quick.mode_name == "quick" and quick.regime.compute.model == "resnet18"
    assert quick.regime.compute.size == 224 and quick.regime.overhead.size == 32
    assert full.regime.compute.model == "resnet50" and full.regime.compute.rise_masks == 4000
    assert "ig_memory_cap" in full.ops and full.repeats == 3  # a mode file's values win over run.yaml's
    assert set(quick.ops) >= {"occlusion", "feature_ablation", "integrated_gradients", "gradcam", "rise", "lime",
                              "kernel_shap", "fgsm_sweep", "imagenet_c", "metrics"}


def test_smoke_run_writes_tables_and_quality_curve(bench_run, tmp_path):
    ops = "[occlusion,integrated_gradients,rise,lime,fgsm_sweep,imagenet_c]"
    cfg = _compose(["mode=smoke", f"ops={ops}", f"out_dir={tmp_path}", "device=cpu", "threads=1"])
    res = bench_run.run(cfg)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["mode"] == "smoke" and set(saved["regimes"]) == {"overhead", "compute"}
    env = saved["environment"]
    assert env["device"].startswith("cpu") and env["versions"]["torch"] and env["date"]
    for name, reg in res["regimes"].items():
        rf = reg["roofline"]
        assert 0 < rf["fwd_s"] < rf["fwdbwd_s"] and rf["fwd_format"] in ("nchw", "channels_last")
        rows = {r["operation"]: r for r in reg["rows"]}
        assert len(rows) == 6
        # the roofline is re-measured after every operation and the best kept; every efficiency uses the final one
        start = reg["roofline_at_start"]
        assert rf["fwd_s"] <= start["fwd_s"] and rf["fwdbwd_s"] <= start["fwdbwd_s"]
        for r in rows.values():
            if r.get("efficiency") is not None:
                floor = r["fwd"] * rf["fwd_s"] + r["fwdbwd"] * rf["fwdbwd_s"]
                assert r["efficiency"] == pytest.approx(floor / r["ours_s"])
                assert r["batch_bound"] * r["efficiency_at_calls"] == pytest.approx(r["efficiency"])
        occ = rows["Occlusion"]
        n_img = cfg.regime[name].images
        assert occ["fwd"] == n_img * 50 and occ["fwdbwd"] == 0  # 49 windows + the clean image, no gradients
        assert occ["efficiency"] > 0 and occ["peer_s"] > 0 and occ["speedup"] > 0
        assert occ["speedup_bound"] == pytest.approx(occ["peer_s"] / occ["roofline_s"])
        assert float(occ["agreement"].split("=")[1]) < 1e-4  # same maps as Captum's default Occlusion
        ig = rows["Integrated Gradients"]
        assert ig["fwdbwd"] == n_img * cfg.regime[name].ig_steps and ig["fwd"] == 0
        assert rows["RISE"]["fwd"] == n_img * cfg.regime[name].rise_masks
        assert rows["FGSM sweep"]["fwdbwd"] == cfg.regime[name].fgsm_images  # one gradient for all 10 ε
        assert rows["ImageNet-C, 15 corruptions"]["per_image_ms"] > 0
        lime = rows["LIME"]  # segments inside the timed call: the SLIC time alone and the efficiency it leaves
        assert 0 < lime["segment_s"] < lime["ours_s"]
        assert lime["segment_bound"] == pytest.approx(lime["roofline_s"] / (lime["roofline_s"] + lime["segment_s"]))
        assert f"SLIC alone takes {lime['segment_s']:.3f} s" in lime["note"]
    md = (tmp_path / "bench.md").read_text()
    assert "| operation | work | ours s | passes" in md and "efficiency" in md and "speed-up" in md
    assert "peak MB" in md and env["device"] in md
    q = saved["quality"]
    assert set(q["curves"]) == {"RISE", "Occlusion", "LIME"}
    assert [p["passes_per_image"] for p in q["curves"]["RISE"]] == [8, 16]
    assert all(0 <= p["insertion_auc"] <= 1 for pts in q["curves"].values() for p in pts)
    png = tmp_path / "quality_per_cost.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roofline_best_keeps_the_faster_measurement_per_pass_kind(bench_run):
    from benchlib.timing import Roofline

    a = Roofline(2e-3, 16, "nchw", 5e-3, 16, "nchw")
    b = Roofline(1e-3, 128, "channels_last", 6e-3, 4, "channels_last")
    best = a.best(b)
    assert (best.fwd_s, best.fwd_batch, best.fwd_format) == (1e-3, 128, "channels_last")
    assert (best.fwdbwd_s, best.fwdbwd_batch, best.fwdbwd_format) == (5e-3, 16, "nchw")
    assert best.floor(10, 2) == pytest.approx(10 * 1e-3 + 2 * 5e-3)


def test_missing_peer_is_skipped_with_a_note(bench_run, tmp_path, monkeypatch):
    import benchlib.operations as ops

    monkeypatch.setattr(ops, "have", lambda module: False)
    cfg = _compose(["mode=smoke", "ops=[lime,fgsm_sweep,metrics]", "regimes=[overhead]", "quality=false",
                    f"out_dir={tmp_path}", "device=cpu", "threads=1"])
    rows = bench_run.run(cfg)["regimes"]["overhead"]["rows"]
    notes = {r["operation"]: r["note"] for r in rows}
    assert "lime not installed" in notes["LIME"]
    assert "torchattacks not installed" in notes["FGSM sweep"] and "--no-deps" in notes["FGSM sweep"]
    assert "quantus not installed" in notes["explanation metrics"]
    assert all(r.get("peer_s") is None for r in rows)
    assert "not installed" in (tmp_path / "bench.md").read_text()


def test_unknown_operation_names_the_valid_ones(bench_run, tmp_path):
    cfg = _compose(["mode=smoke", "ops=[occlusoin]", "regimes=[overhead]", "quality=false", f"out_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="occlusoin.*valid: occlusion"):
        bench_run.run(cfg)


def test_a_hook_left_on_the_model_is_found():
    """What the runner checks after every operation: pytorch-grad-cam's GradCAM kept copying activations after its
    row (it was never released), which slowed every later operation in the same regime."""
    import torch

    sys.path.insert(0, str(BENCH))
    try:
        from benchlib.timing import leftover_hooks
    finally:
        sys.path.remove(str(BENCH))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert leftover_hooks(model) == []
    handle = model[0].register_forward_hook(lambda m, i, o: None)
    assert leftover_hooks(model) == ["0: forward_hooks"]
    handle.remove()
    assert leftover_hooks(model) == []


def test_surrogate_parts_add_up(bench_run):
    """benchmarks/surrogate_parts.py: the timed parts of a LIME call and the rest add up to the call, and it leaves
    no timer patched behind."""
    import surrogate_parts

    import xai_bench.attribution.surrogate as surrogate

    draw = surrogate._BatchedLimeBase._draw
    total, parts = surrogate_parts.parts("lime", rounds=1, n_images=1, n_samples=16)
    assert set(parts) == {"SLIC", "draw", "weights", "surrogate fit", "model forward", "rest"}
    assert all(v > 0 for k, v in parts.items() if k != "rest")
    assert sum(parts.values()) == pytest.approx(total)
    assert surrogate._BatchedLimeBase._draw is draw

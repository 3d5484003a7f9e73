"""The web app's functions without a browser (xai_bench.app.loading / compute / stress): loading and refusing
models and images, the overrides it prints, and its maps against the maps of the command it prints."""

from __future__ import annotations

import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xai_bench.app import compute, loading, stress  # no Gradio needed: the page's work is plain Python
from xai_bench.app.loading import AppError

ROOT = Path(__file__).resolve().parents[1]


class _Marker:
    """Unpickling this creates ``path``: proof that a file was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _small_checkpoint(folder: Path, num_classes: int = 3) -> Path:
    from xai_bench.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=num_classes, in_chans=3, input_size=32,
                         class_names=[f"c{i}" for i in range(num_classes)])
    return save_checkpoint(model, folder)


def _photo(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def small(tmp_path):
    ckpt = _small_checkpoint(tmp_path / "ckpt")
    work = tmp_path / "session"
    work.mkdir()
    return loading.load_upload([str(ckpt / "model.safetensors"), str(ckpt / "model.json")], None, None, work), work


# ---- models ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "model.safetensors"])
def test_pickle_upload_is_refused_and_never_unpickled(tmp_path, name):
    marker = tmp_path / "PWNED"
    evil = tmp_path / name
    evil.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(AppError, match="pickle") as err:
        loading.load_upload([str(evil)], "small_cnn", 3, tmp_path)
    assert "save_file" in str(err.value)  # says how to convert safely
    assert not marker.exists()


def test_torch_save_archive_named_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(AppError, match="torch.save"):
        loading.load_upload([str(path)], "small_cnn", 3, tmp_path)


def test_upload_with_spec_and_with_arch_name(small, tmp_path):
    lm, work = small
    assert lm.model.num_classes == 3 and lm.overrides[0] == "model=checkpoint"
    assert Path(lm.overrides[1].split("=", 1)[1]).parent == work  # copied into the session's own folder
    assert "c0, c1, c2" in lm.describe() and "3×32×32" in lm.describe()
    ckpt = tmp_path / "ckpt"
    other = loading.load_upload([str(ckpt / "model.safetensors")], "small_cnn", 3, work)
    for a, b in zip(other.model.state_dict().values(), lm.model.state_dict().values()):
        assert torch.equal(a, b)


def test_wrong_checkpoint_shapes_give_a_clear_message(tmp_path):
    ckpt = _small_checkpoint(tmp_path / "ckpt", num_classes=3)
    with pytest.raises(AppError, match="shape"):
        loading.load_upload([str(ckpt / "model.safetensors")], "small_cnn", 5, tmp_path)
    with pytest.raises(AppError, match="without a model.json"):
        loading.load_upload([str(ckpt / "model.safetensors")], "", None, tmp_path)
    (tmp_path / "x.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(AppError, match="not a safetensors file"):
        loading.load_upload([str(tmp_path / "x.safetensors")], "small_cnn", 3, tmp_path)


def test_run_folder(tmp_path):
    _small_checkpoint(tmp_path / "run" / "best")
    lm = loading.load_run_folder(str(tmp_path / "run"))
    assert lm.overrides == ["model=checkpoint", f"model.path={(tmp_path / 'run' / 'best').resolve()}"]
    with pytest.raises(AppError, match="does not exist"):
        loading.load_run_folder(str(tmp_path / "nope"))


# ---- images ----------------------------------------------------------------------------------------------------
def test_corrupt_image_and_decompression_bomb_are_refused(small, tmp_path, monkeypatch):
    lm, work = small
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(AppError, match="cannot decode image bad.png"):
        compute.load_images(lm, [str(bad)], None, work)
    big = _photo(tmp_path / "big.png", size=(200, 200))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(AppError, match="decompression bomb"):
        compute.load_images(lm, [str(big)], None, work)


def test_images_are_preprocessed_like_the_dataset(small, tmp_path):
    lm, work = small
    ims = compute.load_images(lm, [str(_photo(tmp_path / "my photo!.png"))], None, work)
    assert ims.images.shape == (1, 3, 32, 32) and 0 <= float(ims.images.min()) <= float(ims.images.max()) <= 1
    assert ims.overrides[0] == "dataset=images" and "my_photo.png" in ims.overrides[1]
    assert "dataset.num_classes=3" in ims.overrides
    with pytest.raises(AppError, match="no image"):
        compute.load_images(lm, [], [], work)


# ---- settings → overrides ----------------------------------------------------------------------------------------
def test_widget_settings_become_config_overrides():
    settings = {"ig_steps": 8.0, "ig_baseline": "blurred", "occ_window": 12, "occ_stride": 6, "lime_samples": 64,
                "lime_segments": 20, "rise_masks": 100, "rise_grid": 5, "rise_p": 0.3, "sg_noise": 0.2,
                "forgrad_sigma": 10, "layer": "features.3"}
    methods = ["integrated_gradients", "occlusion", "lime", "rise", "smoothgrad", "saliency_forgrad", "gradcam"]
    ov = compute.method_overrides(methods, settings)
    cfg = compute.compose("explain", ov)
    a = cfg.attribution
    assert a.integrated_gradients.kwargs.n_steps == 8 and a.integrated_gradients.baseline == "blurred"
    assert (a.occlusion.window, a.occlusion.stride) == (12, 6)
    assert a.lime.kwargs.n_samples == 64 and a.lime.segmentation.slic.n_segments == 20
    assert (a.rise.kwargs.n_masks, a.rise.kwargs.grid_size, a.rise.kwargs.p) == (100, 5, 0.3)
    assert a.smoothgrad.wrapper.stdevs == 0.2 and a.saliency_forgrad.forgrad_sigma == 10
    assert a.gradcam.layer == "features.3"
    with pytest.raises(AppError, match="no attribution method"):
        compute.method_overrides([], settings)


def test_a_bad_layer_is_a_message_not_a_traceback(small, tmp_path):
    lm, work = small
    ims = compute.load_images(lm, [str(_photo(tmp_path / "a.png"))], None, work)
    with pytest.raises(AppError, match="nope"):
        compute.explain(lm, ims, ["gradcam"], {"layer": "nope"})
    with pytest.raises(AppError, match="out of range"):
        compute.explain(lm, ims, ["saliency"], target=7)


# ---- maps, scores, stress ----------------------------------------------------------------------------------------
def test_app_maps_equal_the_printed_explain_command(small, tmp_path):
    """The command the app prints, run as explain.py in a fresh folder, writes the app's maps exactly."""
    from safetensors.torch import load_file

    lm, work = small
    ims = compute.load_images(lm, [str(_photo(tmp_path / "a.png", 1)), str(_photo(tmp_path / "b.png", 2))], None,
                              work)
    settings = {"ig_steps": 8, "lime_samples": 64, "lime_segments": 10}
    methods = ["saliency", "integrated_gradients", "gradcam", "lime"]
    result = compute.explain(lm, ims, methods, settings, target=1, metrics=["sparseness", "deletion"])
    app_file = compute.save_maps(result, work / "maps.safetensors")
    args = shlex.split(result.command)
    assert args[:2] == ["python", "explain.py"]
    run_dir = tmp_path / "cli"
    proc = subprocess.run([sys.executable, str(ROOT / "explain.py"), *args[2:], "logger=none", "progress=false",
                           f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli, app = load_file(str(run_dir / "maps.safetensors")), load_file(str(app_file))
    assert set(methods) <= set(app) and set(cli) == set(app)
    for key in app:
        assert torch.equal(cli[key], app[key]), key
    assert (result.targets == 1).all()
    rows = compute.score_rows(result)
    assert len(rows) == 2 * len(methods) and all(isinstance(r[3], float) and isinstance(r[4], float) for r in rows)
    assert compute.score_header(result)[3:] == ["sparseness ↑", "deletion ↓"]


def test_render_and_stress(small, tmp_path):
    lm, work = small
    ims = compute.load_images(lm, [str(_photo(tmp_path / "a.png"))], None, work)
    result = compute.explain(lm, ims, ["saliency", "gradcam"])
    figs = compute.render_maps(result, work / "figs", view="all", alpha=0.3)
    assert len(figs) == 2 and all(Path(p).stat().st_size > 1000 for p, _ in figs)
    st = stress.stress(lm, ims, result, method="saliency", attack="fgsm", eps255=8, corruption="gaussian_noise",
                       severity=3)
    assert float((st.perturbed - result.images).abs().max()) > 0
    assert set(st.stability) == {"Spearman", "top-10% IoU", "SSIM"}
    assert all(-1 <= v <= 1 for v in st.stability.values())
    assert st.commands[0].startswith("python attack.py") and "attack.eps=[0,8/255]" in st.commands[0]
    assert any(c.startswith("python evaluate.py") and "gaussian_noise" in c for c in st.commands)
    same = stress.stress(lm, ims, result, method="saliency")  # no perturbation: the very same map
    assert torch.equal(same.new_map, result.maps["saliency"]) and same.stability["Spearman"] == pytest.approx(1)
    assert Path(stress.stress_figure(result, st, "saliency", 0, work / "s.png")).is_file()


def test_progress_callback_can_cancel(small, tmp_path):
    lm, work = small
    ims = compute.load_images(lm, [str(_photo(tmp_path / "a.png"))], None, work)
    seen = []

    def cancel(desc, done, total):
        seen.append(desc)
        if "occlusion" in desc or done:
            raise compute.Cancelled

    with pytest.raises(compute.Cancelled):
        compute.explain(lm, ims, ["saliency", "occlusion"], {"occ_window": 8, "occ_stride": 4}, progress=cancel)
    assert "saliency" in seen


def test_sessions_are_isolated_and_cleaned_up():
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from xai_bench.app import ui

    a, b = SimpleNamespace(session_hash="test-a"), SimpleNamespace(session_hash="test-b")
    sa, sb = ui._session(a), ui._session(b)
    assert sa["dir"] != sb["dir"] and sa["dir"].is_dir() and sb["dir"].is_dir() and ui._session(a) is sa
    sa["cancel"].set()
    assert not sb["cancel"].is_set()
    for r, s in ((a, sa), (b, sb)):
        ui._end_session(r)
        assert not s["dir"].exists()
    assert "test-a" not in ui._SESSIONS


def test_handlers_show_messages_not_tracebacks(tmp_path):
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from xai_bench.app import ui

    req = SimpleNamespace(session_hash="test-handlers")
    try:
        info, _, _ = ui.on_load_model("run folder", "efficientnet_lite0", str(tmp_path / "nope"), None, "", None, req)
        assert info.startswith("Error: run folder") and "does not exist" in info
        status, *_ = ui.on_stress("saliency", 0, "fgsm", 8, "none", 0, "all", 0.5, req)
        assert status.startswith("Error: explain first")
    finally:
        ui._end_session(req)

"""Library pieces the studies need: the `glyphs` alphabet stand-in, one reference set for a folder of one concept
(`images` dataset's `accept`), and the "still correct?" figure."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import xai_bench  # noqa: F401  (before torchvision/timm)
from xai_bench.data import glyphs, images
from xai_bench.data.fonts import DEJAVU_DIR, render_glyph_folder
from xai_bench.errors import DataMissingError

needs_fonts = pytest.mark.skipif(not any(DEJAVU_DIR.glob("*.ttf")),
                                 reason="fonts-dejavu-core is not installed (apt-get install fonts-dejavu-core)")


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


@needs_fonts
def test_glyphs_are_a_deterministic_class_per_folder_tree(tmp_path):
    bundle = glyphs(str(tmp_path / "a"), letters="ABC", per_class=6, image_size=24, val_fraction=0.2,
                    test_fraction=0.2)
    assert bundle.class_names == ["A", "B", "C"] and bundle.num_classes == 3 and bundle.image_size == 24
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["A", "B", "C"]
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 18
    item = bundle.train[0]
    assert item["image"].shape == (3, 24, 24) and 0 <= item["label"] < 3
    # the same settings give the same files, anywhere; a different seed gives others
    render_glyph_folder(tmp_path / "b", "ABC", 6, 24)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    render_glyph_folder(tmp_path / "c", "ABC", 6, 24, seed=1)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    # the letter is drawn: images of one letter differ from each other, and no image is a flat colour
    arr = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in sorted((tmp_path / "a" / "A").glob("*"))])
    assert arr.reshape(len(arr), -1).std(1).min() > 5 and np.abs(arr[0] - arr[1]).mean() > 5


@needs_fonts
def test_glyph_folder_is_rerendered_for_other_settings_and_foreign_folders_are_refused(tmp_path):
    root = render_glyph_folder(tmp_path / "g", "AB", 3, 16)
    assert len(list(root.rglob("*.png"))) == 6
    stamp = (root / ".glyphs.json").stat().st_mtime_ns
    render_glyph_folder(root, "AB", 3, 16)  # same settings: reused as is
    assert (root / ".glyphs.json").stat().st_mtime_ns == stamp
    render_glyph_folder(root, "ABC", 2, 16)  # other settings: made again, not mixed with the old files
    assert sorted(p.parent.name + "/" + p.name for p in root.rglob("*.png")) == [
        f"{c}/{i:05d}.png" for c in "ABC" for i in range(2)]
    (tmp_path / "mine" / "A").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="was not made by the glyphs dataset"):
        render_glyph_folder(tmp_path / "mine", "AB", 2, 16)
    with pytest.raises(ValueError, match="distinct letters"):
        render_glyph_folder(tmp_path / "bad", "AA", 2, 16)


def test_glyphs_without_fonts_names_the_package(tmp_path):
    with pytest.raises(DataMissingError, match="fonts-dejavu-core"):
        render_glyph_folder(tmp_path / "g", "AB", 2, 16, font_dir=tmp_path)


def _photos(tmp_path, n=3):
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    return tmp_path


def test_images_accept_gives_every_photo_one_reference_set(tmp_path):
    root = _photos(tmp_path)
    ds = images(root=str(root), accept=[33, 34, 35, 36, 37], labels={"p1": 1}).test
    items = {n: (int(ds.labels[i]), torch.nonzero(ds.accept[i]).flatten().tolist()) for i, n in enumerate(ds.names)}
    assert items["p0.png"] == items["p2.png"] == (33, [33, 34, 35, 36, 37])
    assert items["p1.png"] == (1, [1])  # a photo's own label wins
    with pytest.raises(ValueError, match=r"dataset.accept=\[1000\]"):
        images(root=str(root), accept=[1000])


def test_still_correct_figure():
    from xai_bench.viz import still_correct_figure

    imgs = torch.rand(2, 3, 3, 16, 16)
    classes = [[["tabby", "cat"]] * 3, [["cup", "mug"]] * 3]
    correct = [[[True, False]] * 3, [[False, True]] * 3]
    fig = still_correct_figure(imgs, ["a", "b"], ["clean", "blur", "invert"], ["efficientnet_lite0",
                                                                               "efficientnet_lite1"],
                               classes, correct, title="t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(fig.axes) == 6 and "✓ lite0: tabby" in texts and "✗ lite1: cat" in texts  # family prefix dropped
    assert sum(t.startswith("✓") for t in texts) == sum(t.startswith("✗") for t in texts) == 6
    with pytest.raises(ValueError, match="N×L×C×H×W"):
        still_correct_figure(imgs[0], ["a"], ["clean"], ["m"], [[["x"]]], [[[True]]])


def test_study_figures_stitch_the_newest_run_and_skip_missing_ones(tmp_path):
    """docs/study_figures.py: panels are the runs' own PNGs, the newest run folder wins, a run of another config is
    not taken for the study, and a study without its figures is skipped with exit status 1."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("study_figures", Path(__file__).parents[1] / "docs" /
                                                  "study_figures.py")
    sf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sf)

    def png(path, colour, size=(40, 20)):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, colour).save(path)
        return path

    root = tmp_path / "repo"
    for i, (date, method) in enumerate((("2026-01-01", "rise_20000"), ("2026-01-02", "rise_20000"),
                                        ("2026-01-03", "saliency"))):
        run = root / "outputs" / "explain" / date
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"attribution:\n  {method}: {{}}\n")
        p = png(run / "figures" / "attributions.png", ("red", "green", "blue")[i], (40 + 10 * i, 20))
        os.utime(p, (1000 + i, 1000 + i))
    assert sf.newest(root, sf.STUDIES["xai_suite"][0][0], sf.MARKERS["xai_suite"]).parts[-3] == "2026-01-02"

    out = tmp_path / "img"
    out.mkdir()
    argv = sys.argv
    try:
        sys.argv = ["study_figures.py", "--root", str(root), "--out", str(out), "--studies", "xai_suite",
                    "ood_ensemble"]
        assert sf.main() == 1  # ood_ensemble has no figure here
    finally:
        sys.argv = argv
    made = Image.open(out / "study_xai_suite.png")
    assert made.size == (50, 20) and made.getpixel((10, 10)) == (0, 128, 0)  # the newest xai_suite run's panel
    assert not (out / "study_ood_ensemble_still_correct.png").exists()

    two = sf.stitch([[png(tmp_path / "a.png", "red", (40, 20)), png(tmp_path / "b.png", "blue", (20, 40))],
                     [png(tmp_path / "c.png", "green", (100, 10))]], pad=0)
    assert two.size == (100, 40 + 10)  # row 1: 40×20 + 10×20 (b at height 20) = 50×20, scaled to the width 100

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from xai_bench.tasks.setup import prepare_for_model
from xai_bench import data
from xai_bench.data.synthetic import make_shapes


def test_synthetic_shapes_contract_and_determinism():
    a = make_shapes(64, 32, seed=3)
    b = make_shapes(64, 32, seed=3)
    c = make_shapes(64, 32, seed=4)
    assert a["image"].shape == (64, 3, 32, 32) and a["mask"].shape == (64, 1, 32, 32)
    assert a["image"].min() >= 0 and a["image"].max() <= 1
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert set(a["label"].tolist()) == set(range(6))
    # every image has an object, and the object occupies a minority of the image
    frac = a["mask"].mean((1, 2, 3))
    assert (frac > 0.005).all() and (frac < 0.5).all()


def test_synthetic_shapes_not_solvable_by_colour_or_size():
    """Mean colour and object area alone must not predict the class well (it is a shape problem)."""
    d = make_shapes(1200, 32, seed=0)
    feats = torch.cat([d["image"].mean((2, 3)), d["mask"].mean((2, 3))], 1).numpy()
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=500).fit(feats[:1000], d["label"][:1000].numpy())
    assert clf.score(feats[1000:], d["label"][1000:].numpy()) < 0.6


def test_bundle_splits_and_augment_keeps_mask_aligned():
    b = data.synthetic_shapes(n_train=16, n_val=8, n_test=8, image_size=32,
                              augment={"rotation": 30, "translate": 0.1, "hflip": True})
    item = b.train[0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert b.has_masks and b.class_names[0] == "circle"
    with pytest.raises(ValueError, match="dataset.augment"):
        data.synthetic_shapes(n_train=4, n_val=0, n_test=0, image_size=32, augment={"rotate": 3})


def _write_idx(root, prefix, n):
    raw = root / prefix / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("t10k", n // 2)):
        imgs = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + imgs.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())
    return imgs, labels


@pytest.mark.parametrize("builder,folder", [(data.mnist, "MNIST"), (data.fashion_mnist, "FashionMNIST")])
def test_mnist_like_through_torchvision_loader(tmp_path, builder, folder, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    _write_idx(tmp_path, folder, 40)
    b = builder(root=str(tmp_path), val_fraction=0.25, augment=None)
    assert len(b.train) == 30 and len(b.val) == 10 and len(b.test) == 20
    item = b.test[0]
    assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1


def test_missing_torchvision_dataset_names_root_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.download=true"):
        data.mnist(root=str(tmp_path))


def test_fashion_mnist_from_debian_package_layout(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    src = tmp_path / "src"
    imgs, labels = _write_idx(src, "FashionMNIST", 20)
    for f in (src / "FashionMNIST" / "raw").iterdir():
        with gzip.open(debian / (f.name + ".gz"), "wb") as g:
            g.write(f.read_bytes())
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    b = data.fashion_mnist(root=str(tmp_path / "root"), val_fraction=0.0)
    assert len(b.train) == 20 and b.class_names[9] == "Ankle boot"
    assert torch.equal(b.test[0]["image"][0], torch.as_tensor(imgs[0]).float() / 255)


def test_cifar10_through_torchvision_loader(tmp_path, monkeypatch):
    import pickle

    import torchvision

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(range(4))}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": list(data.CIFAR10_CLASSES)}))
    # The real loader checks md5 sums of the official files; ours are written in the same format.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "meta", {**torchvision.datasets.CIFAR10.meta, "md5": None})
    b = data.cifar10(root=str(tmp_path), val_fraction=0.25, augment=None)
    assert len(b.train) + len(b.val) == 20 and len(b.test) == 4
    assert b.test[0]["image"].shape == (3, 32, 32)


def test_digits_bundle():
    b = data.digits(image_size=16)
    assert b.train[0]["image"].shape == (1, 16, 16)
    assert len(b.train) + len(b.val) + len(b.test) == 1797


def _write_folder(root, classes=("A", "B", "C"), per_class=4, size=20):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_split_by_seed(tmp_path):
    _write_folder(tmp_path / "asl")
    b = data.imagefolder(root=str(tmp_path / "asl"), image_size=16, val_fraction=0.25, seed=1)
    assert b.class_names == ["A", "B", "C"] and len(b.train) == 9 and len(b.val) == 3
    assert b.train[0]["image"].shape == (3, 16, 16)
    again = data.imagefolder(root=str(tmp_path / "asl"), image_size=16, val_fraction=0.25, seed=1)
    assert b.val.indices == again.val.indices
    with pytest.raises(ValueError, match="class sub-folders"):
        (tmp_path / "flat").mkdir()
        data.imagefolder(root=str(tmp_path / "flat"))


def test_images_with_reference_sets_and_odd_formats(tmp_path, tiny_classifier):
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.full((10, 12, 3), 200, np.uint8)).save(folder / "rgb.jpg")
    Image.fromarray(np.full((10, 12, 4), 100, np.uint8), mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(np.full((10, 12), 40000, np.uint16)).save(folder / "deep16.png")
    Image.fromarray(np.full((10, 12), 7, np.uint8), mode="L").save(folder / "gray.png")
    (folder / "labels.json").write_text(json.dumps({"rgb.jpg": [0, 2], "gray": 1}))
    b = data.images(root=str(folder), labels=str(folder / "labels.json"), num_classes=3)
    prepare_for_model(b, tiny_classifier)
    items = {it["name"]: it for it in (b.test[i] for i in range(len(b.test)))}
    assert set(items) == {"rgb.jpg", "rgba.png", "deep16.png", "gray.png"}
    for it in items.values():
        assert it["image"].shape == (3, 32, 32) and 0 <= it["image"].min() and it["image"].max() <= 1
    assert items["rgb.jpg"]["accept"].tolist() == [True, False, True]
    assert items["gray.png"]["label"] == 1 and items["rgba.png"]["label"] == -1
    assert abs(float(items["deep16.png"]["image"].mean()) - 40000 / 65535) < 0.01


def test_undecodable_image_names_the_file(tmp_path, tiny_classifier):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):  # skipped when built, and then nothing is left
        b = prepare_for_model(data.images(root=str(folder), num_classes=3), tiny_classifier)
        b.test[0]


def test_labels_out_of_range(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "x.png")
    with pytest.raises(ValueError, match="outside 0..2"):
        data.images(root=str(folder), labels={"x.png": 7}, num_classes=3)


def test_samples_have_reference_sets():
    b = data.samples()
    assert b.test.names == list(data.SAMPLE_PHOTOS)
    assert b.test.accept.sum(1).min() >= 2
    with pytest.raises(ValueError, match="available"):
        data.samples(names=["chelsae"])


def _tensor_file(path, **tensors):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"names": '["a", "b"]'})
    return path


def test_tensors_dataset_reads_exactly_with_labels(tmp_path):
    from xai_bench.data import tensors

    x = torch.rand(2, 3, 20, 24)
    bundle = tensors(str(_tensor_file(tmp_path / "t.safetensors", images=x, targets=torch.tensor([1, -1]))),
                     num_classes=3)
    item = bundle.test[0]
    assert torch.equal(item["image"], x[0]) and item["label"] == 1 and item["name"] == "a"
    assert bundle.test[1]["label"] == -1 and bundle.ready_shape == (3, 20, 24) and bundle.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("tensors_, key, match", [
    ({"images": torch.rand(2, 3, 8, 8), "adv_0.1": torch.rand(2, 3, 8, 8)}, None, "dataset.key=<name>"),
    ({"images": torch.rand(2, 3, 8, 8)}, "adv", "has no tensor 'adv'"),
    ({"images": torch.rand(2, 8, 8, 3)}, None, "N×C×H×W"),
    ({"images": torch.full((2, 3, 8, 8), float("nan"))}, None, "NaN/inf"),
    ({"images": torch.rand(2, 3, 8, 8) * 255}, None, "divide by 255"),
    ({"images": torch.rand(2, 3, 8, 8) - 0.5}, None, "normalised"),
    ({"images": (torch.rand(2, 3, 8, 8) * 255).byte()}, None, "torch.uint8"),
    ({"images": torch.rand(2, 3, 8, 8), "labels": torch.tensor([0, 1, 2])}, None, "'labels' has shape"),
    ({"labels": torch.tensor([0, 1])}, None, "no N×C×H×W tensor"),
])
def test_tensors_dataset_validation_names_file_and_fix(tmp_path, tensors_, key, match):
    from xai_bench.data import tensors

    path = _tensor_file(tmp_path / "bad.safetensors", **tensors_)
    with pytest.raises(ValueError, match=match) as err:
        tensors(str(path), key=key, num_classes=3)
    assert str(path) in str(err.value)


def test_tensors_dataset_missing_file_and_size_mismatch(tmp_path, compose):
    from xai_bench.data import tensors
    from xai_bench.tasks.setup import build_data, build_model

    with pytest.raises(FileNotFoundError, match="dataset.path"):
        tensors(str(tmp_path / "nope.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        tensors(str(tmp_path / "junk.safetensors"))
    path = _tensor_file(tmp_path / "t.safetensors", images=torch.rand(2, 3, 16, 16), labels=torch.tensor([0, 1]))
    cfg = compose("evaluate", ["dataset=tensors", f"dataset.path={path}", "dataset.num_classes=6", "model=small_cnn",
                               "model.input_size=32", "logger=none"], tmp_path)
    with pytest.raises(ValueError, match="never resized"):
        build_model(cfg, build_data(cfg))

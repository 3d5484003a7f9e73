"""What the web app loads from its users: models (zoo, run folder, uploaded safetensors) and images, validated.

Everything here is plain Python (no Gradio), so the tests call it directly. Every refusal raises :class:`AppError`
with a message meant for the page: it names the file and the fix, and the UI shows it instead of a traceback.

Nothing is ever unpickled: weights are read with ``safetensors`` only, and a ``.pt``/``.pth`` (or any file whose
bytes look like a pickle or a ``torch.save`` zip) is refused *before* anything reads it as a model.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xai_bench.errors import UserError

__all__ = ["AppError", "LoadedModel", "ZOO", "check_image_files", "load_run_folder", "load_upload", "load_zoo",
           "refuse_pickle", "sample_names"]

# The zoo models that work offline with real weights (conf/model/<name>.yaml); the first is the default.
ZOO = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar", ".joblib", ".npy", ".npz")
MAX_CHECKPOINT_BYTES = 512 * 2**20
MAX_IMAGE_BYTES = 20 * 2**20
MAX_IMAGES = 8  # one batch of explain.py (batch_size 16): the app's maps are then the CLI's, seed for seed

CONVERT_HINT = (
    "Convert it where you trust the file: python -c \"import torch; from safetensors.torch import save_file; "
    "sd = torch.load('model.pt', weights_only=True); save_file({k: v.contiguous() for k, v in sd.items()}, "
    "'model.safetensors')\" (weights_only=True refuses arbitrary objects), then upload model.safetensors with its "
    "model.json, or with an architecture name")


class AppError(UserError, ValueError):
    """A problem with what the user gave the app; ``str(err)`` is shown on the page as it is."""


@dataclass
class LoadedModel:
    """A model ready for the app, and how the command line names it (``model=…`` overrides)."""

    model: torch.nn.Module
    overrides: list[str]
    source: str
    files: list[str] = field(default_factory=list)

    def describe(self) -> str:
        m = self.model
        c, h, w = m.input_size
        names = list(m.class_names)
        shown = ", ".join(names[:8]) + (f", … ({len(names)} classes)" if len(names) > 8 else "")
        return (f"**{m.name}** ({self.source}) · input {c}×{h}×{w}"
                f"{f', resize {m.resize_size} then centre crop' if m.resize_size else ', resized to fit'}"
                f" · {m.num_classes} classes: {shown} · Grad-CAM layer: `{m.default_layer}`")


def refuse_pickle(path: str | Path) -> None:
    """Refuse a file that is (or may be) a pickle, by its name or by its first bytes; never opens it as a model."""
    path = Path(path)
    name = path.name
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise AppError(f"{name}: a {path.suffix} file is a Python pickle, and unpickling a file can run any code "
                       f"its author wrote; the app never loads one. {CONVERT_HINT}")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5 or head[:4] == b"PK\x03\x04":
        raise AppError(f"{name}: its bytes are a Python pickle or a torch.save archive, whatever its name; the app "
                       f"never unpickles. {CONVERT_HINT}")


def _check_safetensors(path: Path) -> None:
    """A safetensors file starts with an 8-byte header length and a JSON header: refuse anything else early."""
    refuse_pickle(path)
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise AppError(f"{path.name}: {size / 2**20:.0f} MiB is over the app's {MAX_CHECKPOINT_BYTES // 2**20} MiB "
                       f"limit; use the command line (model=checkpoint model.path=…) for larger models")
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{" or struct.unpack("<Q", head[:8])[0] > size:
        raise AppError(f"{path.name} is not a safetensors file (no safetensors header); export weights with "
                       f"safetensors.torch.save_file")


def load_zoo(name: str) -> LoadedModel:
    """A model of :data:`ZOO` (offline pretrained weights), built from its ``conf/model`` file."""
    from xai_bench.app.compute import compose
    from xai_bench.tasks.setup import model_from_node

    if name not in ZOO:
        raise AppError(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    cfg = compose("explain", [f"model={name}"])
    return LoadedModel(model_from_node(cfg.model, None, warn_random=False).eval(), [f"model={name}"], "zoo")


def _load_folder(folder: Path, source: str, shown: str) -> LoadedModel:
    from xai_bench.models import load_checkpoint

    try:
        model = load_checkpoint(folder)
    except (ValueError, FileNotFoundError) as exc:  # CheckpointError is a ValueError; the message names the field
        raise AppError(str(exc)) from None
    return LoadedModel(model.eval(), ["model=checkpoint", f"model.path={_quote(str(folder))}"], source,
                       files=[shown])


def load_run_folder(path: str) -> LoadedModel:
    """A checkpoint folder written by ``train.py``: the run folder (its ``best/``) or the ``best`` folder itself."""
    folder = Path(path.strip()).expanduser()
    if not path.strip() or not folder.is_dir():
        raise AppError(f"run folder {path!r} does not exist on the server; give the folder train.py wrote (e.g. "
                       f"outputs/train/<run>) or its best/ folder")
    if not (folder / "model.safetensors").is_file() and (folder / "best" / "model.safetensors").is_file():
        folder = folder / "best"
    if not (folder / "model.safetensors").is_file():
        raise AppError(f"{folder} holds no model.safetensors; point at a run folder of train.py (it has best/) or "
                       f"at a folder with model.safetensors and model.json")
    _check_safetensors(folder / "model.safetensors")
    return _load_folder(folder.resolve(), "run folder", str(folder))


def load_upload(paths: Sequence[str], arch: str | None, num_classes: int | None, workdir: Path) -> LoadedModel:
    """Uploaded weights: ``model.safetensors`` + ``model.json``, or ``.safetensors`` + an architecture name (a zoo
    name, ``timm/<arch>`` or ``torchvision/<arch>``; ``num_classes`` sizes its head). The files are copied into
    ``workdir`` (the session's own folder) and read with the checkpoint loader, whose checks (``model.json`` fields,
    weight keys and shapes) give the messages."""
    files = [Path(p) for p in paths or []]
    if not files:
        raise AppError("no checkpoint uploaded: drop model.safetensors and model.json (or model.safetensors and "
                       "type an architecture name)")
    for p in files:
        refuse_pickle(p)
    weights = [p for p in files if p.suffix.lower() == ".safetensors"]
    specs = [p for p in files if p.suffix.lower() == ".json"]
    other = [p.name for p in files if p not in weights and p not in specs]
    if other:
        raise AppError(f"{', '.join(other)}: the app takes only .safetensors weights and a model.json spec")
    if len(weights) != 1 or len(specs) > 1:
        raise AppError(f"upload exactly one .safetensors file (got {len(weights)}) and at most one model.json "
                       f"(got {len(specs)})")
    _check_safetensors(weights[0])
    folder = workdir / f"checkpoint_{len(list(workdir.glob('checkpoint_*')))}"
    folder.mkdir(parents=True)
    shutil.copyfile(weights[0], folder / "model.safetensors")
    if specs:
        if specs[0].stat().st_size > 2**20:
            raise AppError(f"{specs[0].name} is over 1 MiB: not a model.json written by train.py")
        shutil.copyfile(specs[0], folder / "model.json")
    else:
        arch = (arch or "").strip()
        if not arch:
            raise AppError(f"{weights[0].name} came without a model.json: type its architecture (e.g. small_cnn, "
                           f"timm/resnet18, torchvision/resnet50) or upload the model.json train.py wrote beside it")
        spec: dict = {"arch": {"name": arch}}
        if num_classes:
            spec["arch"]["num_classes"] = int(num_classes)
        (folder / "model.json").write_text(json.dumps(spec))
    return _load_folder(folder, "uploaded checkpoint", weights[0].name)


def check_image_files(paths: Sequence[str]) -> None:
    """Every uploaded image decodes (Pillow, with the library's decompression-bomb and float checks) and is within
    the size limits; the first bad one raises :class:`AppError` naming it."""
    from xai_bench.data.transforms import BadImageError, load_image

    if not paths:
        raise AppError("no image: upload one (PNG, JPEG, …) or pick a bundled sample")
    if len(paths) > MAX_IMAGES:
        raise AppError(f"{len(paths)} images uploaded; the app explains at most {MAX_IMAGES} at a time (use "
                       f"explain.py with dataset=images for more)")
    for p in paths:
        path = Path(p)
        refuse_pickle(path)
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise AppError(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB is over the "
                           f"{MAX_IMAGE_BYTES // 2**20} MiB image limit")
        try:
            load_image(path)
        except BadImageError as exc:
            raise AppError(str(exc).replace(str(path), path.name)) from None


def sample_names() -> list[str]:
    """The bundled photos (``dataset=samples``)."""
    from xai_bench.data import _sample_photos

    return list(_sample_photos())


def _quote(value: str) -> str:
    """A Hydra override value: quoted when it holds characters the override grammar would read."""
    if all(c.isalnum() or c in "/._-+:~" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

"""The README's commands, run the way a user runs them (a subprocess through @hydra.main)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, tmp_path, **env):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "disabled", **env})


def test_train_script_debug_run(tmp_path):
    out = tmp_path / "run"
    proc = _run(["train.py", "debug=default", "dataset.image_size=32", "trainer.progress=false",
                 f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "ok" and (out / "best" / "model.safetensors").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()  # Hydra's own record of the composed config


def test_bad_override_fails_with_clear_message(tmp_path):
    proc = _run(["train.py", "model=smal_cnn", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    assert "small_cnn" in proc.stderr  # Hydra lists the available options of the group


def test_unknown_model_name_lists_close_matches(tmp_path):
    proc = _run(["train.py", "debug=default", "model.name=smal_cnn", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    assert "Did you mean: small_cnn" in proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "smal_cnn" in res["error"]

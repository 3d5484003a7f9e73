"""The Gradio page of ``xai-app``: widgets, and handlers that call :mod:`xai_bench.app.compute`.

Gradio (a maintained library for ML demos: uploads, galleries, progress and cancellation, a queue, per-session state)
draws the page; every computation is in :mod:`~xai_bench.app.compute` and :mod:`~xai_bench.app.loading`, which the
tests call without a browser. Handlers never let an exception reach the page as a traceback: a user's mistake
(:class:`~xai_bench.app.loading.AppError`) is shown as its message; anything else as one line, with the traceback in
the server's log.

Sessions are isolated: each browser session gets its own working folder (uploads are copied there under safe names,
figures and maps are written there) and its own model, images and results in ``gr.State``; the folder is removed when
the session ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

# offline: no telemetry and no update check (read when gradio is imported)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from xai_bench.app import compute, stress
from xai_bench.app.compute import DEFAULT_METHODS, DEFAULT_METRICS, VIEWS, Cancelled
from xai_bench.app.loading import MAX_IMAGES, ZOO, AppError, load_run_folder, load_upload, load_zoo, sample_names

log = logging.getLogger(__name__)

MAX_FILE_SIZE = "512mb"  # per upload (checkpoints); images are limited again to loading.MAX_IMAGE_BYTES
_SESSIONS: dict[str, dict[str, Any]] = {}
# Explaining and stress tests seed torch's global generator the way explain.py does (LIME, SmoothGrad, PGD draw from
# it): two sessions computing at once would interleave their draws, so these events queue one at a time (Stop and
# uploads stay responsive).
_ONE_AT_A_TIME: dict[str, Any] = {"concurrency_limit": 1, "concurrency_id": "compute"}
_LOCK = threading.Lock()

INTRO = """# xai-bench
Load a classifier and images, explain its predictions with several attribution methods side by side, score the maps,
then attack or corrupt the image and see whether the prediction and the map hold. Every panel prints the
`explain.py` / `attack.py` command that reproduces it."""


def _session(request: Any) -> dict[str, Any]:
    """This browser session's state: working folder, cancel flag, model, images and last result."""
    key = getattr(request, "session_hash", None) or "local"
    with _LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = {"dir": Path(tempfile.mkdtemp(prefix="xai-app-")), "cancel": threading.Event()}
        return _SESSIONS[key]


def _end_session(request: gr.Request) -> None:
    key = getattr(request, "session_hash", None) or "local"
    with _LOCK:
        s = _SESSIONS.pop(key, None)
    if s:
        shutil.rmtree(s["dir"], ignore_errors=True)


def _message(exc: BaseException) -> str:
    """What the page shows for an exception: the message of a user error, one line otherwise."""
    if isinstance(exc, Cancelled):
        return "Cancelled."
    if isinstance(exc, AppError):
        return f"Error: {exc}"
    log.exception("xai-app: unexpected error")
    return f"Error: internal error ({type(exc).__name__}: {exc}); the server log has the details"


# ---------------------------------------------------------------------------------------------------------------
def _model_key(source: str, zoo: str, run_dir: str, ckpt: list[str] | None, arch: str, ncls: Any) -> tuple:
    return (source, zoo, run_dir, tuple(ckpt or ()), arch, ncls)


def _ensure_model(s: dict[str, Any], source: str, zoo: str, run_dir: str, ckpt: list[str] | None, arch: str,
                  ncls: Any) -> Any:
    key = _model_key(source, zoo, run_dir, ckpt, arch, ncls)
    if s.get("model_key") != key:
        s.pop("model", None)
        if source == "zoo":
            lm = load_zoo(zoo)
        elif source == "run folder":
            lm = load_run_folder(run_dir or "")
        else:
            lm = load_upload(ckpt or [], arch, int(ncls) if ncls else None, s["dir"])
        s["model"], s["model_key"] = lm, key
        s.pop("result", None)
    return s["model"]


def _model_widgets(lm: Any) -> tuple[Any, Any]:
    m = lm.model
    classes = [("predicted class (top-1)", -1)] + [(f"{i}: {n}", i) for i, n in enumerate(m.class_names)]
    layers = list(dict.fromkeys([m.default_layer, *m.conv_layer_names()] if m.default_layer else
                                m.conv_layer_names()))
    return (gr.update(choices=classes, value=-1),
            gr.update(choices=layers, value=m.default_layer if m.default_layer else None))


def on_load_model(source, zoo, run_dir, ckpt, arch, ncls, request: gr.Request = None):
    s = _session(request)
    try:
        lm = _ensure_model(s, source, zoo, run_dir, ckpt, arch, ncls)
    except Exception as exc:  # every failure is shown on the page (see _message)
        return _message(exc), gr.update(), gr.update()
    return ("Model: " + lm.describe(), *_model_widgets(lm))


def _load_images(s: dict[str, Any], files: list[str] | None, samples: list[str] | None) -> Any:
    key = (s.get("model_key"), tuple(files or ()), tuple(samples or ()))
    if s.get("images_key") != key:
        s["images"] = compute.load_images(s["model"], files, samples, s["dir"])
        s["images_key"] = key
    return s["images"]


def _predictions_md(lm: Any, ims: Any) -> str:
    lines = ["| image | top-5 predictions |", "|---|---|"]
    for name, top in zip(ims.names, compute.top_k(lm.model, ims.images)):
        lines.append(f"| {name} | " + "; ".join(f"{c.split(',')[0]} {p:.2f}" for c, p in top) + " |")
    m = lm.model
    c, h, w = m.input_size
    how = f"resize the shorter side to {m.resize_size}, centre-crop {h}×{w}" if m.resize_size else \
        f"resize to {h}×{w}"
    return "\n".join(lines) + f"\n\nPreprocessing (the model's own): {how}, {c} channel(s), values in [0, 1]."


def on_images(source, zoo, run_dir, ckpt, arch, ncls, files, samples, request: gr.Request = None):
    s = _session(request)
    try:
        lm = _ensure_model(s, source, zoo, run_dir, ckpt, arch, ncls)
        ims = _load_images(s, files, samples)
    except Exception as exc:
        return _message(exc), [], ""
    gallery = [(compute.to_pil(x), n) for x, n in zip(ims.images, ims.names)]
    return f"Images: {len(ims.names)} ready.", gallery, _predictions_md(lm, ims)


def on_explain(source, zoo, run_dir, ckpt, arch, ncls, files, samples, methods, target, metrics, view, alpha,
               ig_steps, ig_baseline, occ_window, occ_stride, lime_samples, lime_segments, rise_masks, rise_grid,
               rise_p, sg_noise, forgrad_sigma, layer, request: gr.Request = None,
               progress=gr.Progress()):
    """A generator: the page shows each method's maps as soon as they are made, then the scores."""
    s = _session(request)
    s["cancel"].clear()
    s["running"] = True  # until the work ends: finished, failed or cancelled (the tests watch it)
    settings = {"ig_steps": ig_steps, "ig_baseline": ig_baseline, "occ_window": occ_window, "occ_stride": occ_stride,
                "lime_samples": lime_samples, "lime_segments": lime_segments, "rise_masks": rise_masks,
                "rise_grid": rise_grid, "rise_p": rise_p, "sg_noise": sg_noise, "forgrad_sigma": forgrad_sigma,
                "layer": layer}

    def tick(desc: str, done: int, total: int | None) -> None:
        if s["cancel"].is_set():
            raise Cancelled
        if progress is not None:
            progress((done, total) if total else None, desc=desc)

    nothing = gr.update()
    try:
        lm = _ensure_model(s, source, zoo, run_dir, ckpt, arch, ncls)
        ims = _load_images(s, files, samples)
        out = s["dir"] / "explain"
        shutil.rmtree(out, ignore_errors=True)
        result = None
        gallery: list[tuple[str, str]] = []
        steps = compute.explain_steps(lm, ims, methods or [], settings, target=None if target in (None, -1) else
                                      int(target), metrics=metrics or [], progress=tick)
        for step, result in steps:
            if step != "metrics":
                gallery += compute.render_maps(result, out / "figures", view=view, alpha=alpha, methods=[step])
                status = f"Working: {step}: {result.seconds[step]:.1f} s" + ("; scoring…" if metrics else "")
                shown = compute.stack_figures([p for p, _ in gallery], out / f"maps_{len(gallery)}.png")
                yield status, shown, nothing, result.command, nothing, nothing
        assert result is not None
        s["result"] = result
        maps_path = compute.save_maps(result, out / "maps.safetensors")
        (out / "command.txt").write_text(result.command + "\n")
        table = compute.score_table(result) if result.scores else None
        done = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
        s["running"], s["outcome"] = False, "done"
        yield (f"Done: {len(result.maps)} method(s) on {len(ims.names)} image(s): {done}",
               compute.stack_figures([p for p, _ in gallery], out / "maps.png"),
               table if table is not None else nothing, result.command,
               [str(maps_path), str(out / "command.txt"), *[p for p, _ in gallery]],
               gr.update(choices=list(result.maps), value=next(iter(result.maps))))
    except Exception as exc:
        s["running"], s["outcome"] = False, type(exc).__name__
        yield _message(exc), nothing, nothing, nothing, nothing, nothing


def on_stop(request: gr.Request = None):
    _session(request)["cancel"].set()
    return "Stopping…"


def on_stress(method, row, attack, eps, corruption, severity, view, alpha, request: gr.Request = None):
    s = _session(request)
    try:
        if "result" not in s:
            raise AppError("explain first: the stress test compares with the clean image's map")
        result = s["result"]
        row = int(row or 0)
        if not 0 <= row < len(result.targets):
            raise AppError(f"row must be in [0, {len(result.targets) - 1}] (one per image × target)")
        st = stress.stress(s["model"], s["images"], result, method=method, row=row, attack=attack,
                            eps255=float(eps or 0), corruption=corruption, severity=int(severity or 0))
        s["n_stress"] = s.get("n_stress", 0) + 1  # a new file each time: the page caches by path
        path = stress.stress_figure(result, st, method, row, s["dir"] / f"stress_{s['n_stress']}.png",
                                     view=view if view != "all" else "overlay", alpha=alpha)
    except Exception as exc:
        return _message(exc), None, "", ""
    changed = st.clean_top[0][0] != st.new_top[0][0]
    pred = (f"**clean**: {st.clean_top[0][0]} ({st.clean_top[0][1]:.2f}) → **{st.what}**: {st.new_top[0][0]} "
            f"({st.new_top[0][1]:.2f}) — prediction {'CHANGED' if changed else 'unchanged'}\n\n"
            "Map stability (clean vs perturbed, same class): " +
            ", ".join(f"{k} {v:.3f}" for k, v in st.stability.items()))
    return "Done: stress test.", path, pred, "\n".join(st.commands) or "# no perturbation selected"


# ---------------------------------------------------------------------------------------------------------------
def build_app() -> Any:
    """The page (a ``gr.Blocks``); :func:`main` launches it."""
    from xai_bench.robustness.corruptions import list_corruptions

    methods = compute.config_names("attribution")
    metrics = compute.config_names("metric")
    with gr.Blocks(title="xai-bench", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        status = gr.Markdown("Pick a model and an image, then press **Explain**.", elem_id="status")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### 1 · Model")
                source = gr.Radio(["zoo", "run folder", "upload"], value="zoo", label="source", elem_id="source")
                zoo = gr.Dropdown(list(ZOO), value=ZOO[0], label="zoo model (ImageNet weights, offline)")
                run_dir = gr.Textbox(label="run folder of train.py (on this server)", placeholder="outputs/train/…")
                ckpt = gr.File(file_count="multiple", label="checkpoint: model.safetensors + model.json "
                               "(.pt/.pth pickles are refused)", elem_id="ckpt_upload")
                with gr.Row():
                    arch = gr.Textbox(label="architecture (without model.json)",
                                      placeholder="small_cnn, timm/resnet18, …")
                    ncls = gr.Number(label="classes", precision=0, value=None)
                load_btn = gr.Button("Load model", elem_id="load_model")
                model_info = gr.Markdown(elem_id="model_info")
            with gr.Column():
                gr.Markdown(f"### 2 · Images (up to {MAX_IMAGES})")
                files = gr.File(file_count="multiple", label="upload images", elem_id="image_upload")
                samples = gr.Dropdown(sample_names(), value=["chelsea"], multiselect=True, label="bundled samples",
                                      elem_id="samples")
                prep = gr.Gallery(label="what the model sees (after its preprocessing)", columns=4, height=200,
                                  elem_id="prepared")
                preds = gr.Markdown(elem_id="predictions")
        gr.Markdown("### 3 · Explain")
        with gr.Row():
            method_box = gr.CheckboxGroup(methods, value=list(DEFAULT_METHODS), label="methods", elem_id="methods",
                                          scale=3)
            with gr.Column(scale=1):
                target = gr.Dropdown([("predicted class (top-1)", -1)], value=-1, filterable=True,
                                     label="target class (type to search)", elem_id="target")
                metric_box = gr.Dropdown(metrics, value=list(DEFAULT_METRICS), multiselect=True,
                                         label="explanation metrics", elem_id="metrics")
        with gr.Accordion("method settings", open=False, elem_id="settings"):
            with gr.Row():
                ig_steps = gr.Slider(2, 128, value=16, step=1, label="IG steps")
                ig_baseline = gr.Dropdown(["zeros", "constant", "blurred", "uniform"], value="zeros",
                                          label="IG baseline")
                occ_window = gr.Slider(4, 112, value=56, step=4, label="Occlusion window (px)")
                occ_stride = gr.Slider(2, 112, value=28, step=2, label="Occlusion stride (px)")
            with gr.Row():
                lime_samples = gr.Slider(16, 1024, value=256, step=16, label="LIME samples")
                lime_segments = gr.Slider(4, 200, value=50, step=1, label="LIME superpixels")
                rise_masks = gr.Slider(50, 4000, value=1000, step=50, label="RISE masks N")
                rise_grid = gr.Slider(2, 16, value=7, step=1, label="RISE grid")
                rise_p = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="RISE p")
            with gr.Row():
                sg_noise = gr.Slider(0.0, 0.5, value=0.15, step=0.01, label="SmoothGrad noise σ")
                forgrad_sigma = gr.Slider(1, 112, value=15, step=1, label="ForGrad σ (cycles/image)")
                layer = gr.Dropdown([], label="Grad-CAM layer", allow_custom_value=True, elem_id="layer")
        with gr.Row():
            view = gr.Radio(list(VIEWS), value="all", label="view (all: heat map, overlay, isolines, signed)")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="overlay α")
            explain_btn = gr.Button("Explain", variant="primary", elem_id="explain")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
        maps = gr.Image(label="maps (one row per image × method; figures in the downloads)", type="filepath",
                        elem_id="maps", format="png")
        scores = gr.Dataframe(label="explanation metrics per map (↑ higher is better, ↓ lower)", elem_id="scores")
        explain_cmd = gr.Code(label="the same maps from the command line", language="shell", elem_id="explain_cmd",
                              wrap_lines=True)
        downloads = gr.File(label="downloads: maps.safetensors, command, figures", file_count="multiple",
                            elem_id="downloads")
        gr.Markdown("### 4 · Stress: attack and corrupt, then explain again")
        with gr.Row():
            stress_method = gr.Dropdown([], label="method", elem_id="stress_method")
            row = gr.Number(value=0, precision=0, label="row (image × target)")
            attack = gr.Radio(["none", "fgsm", "pgd_linf"], value="fgsm", label="attack", elem_id="attack")
            eps = gr.Slider(0, 32, value=0, step=0.5, label="ε × 255", elem_id="eps")
            corruption = gr.Dropdown(["none", *list_corruptions()], value="none", label="corruption")
            severity = gr.Slider(0, 5, value=0, step=1, label="severity")
            stress_btn = gr.Button("Stress test", elem_id="stress")
        with gr.Row():
            stress_img = gr.Image(label="clean vs perturbed", type="filepath", elem_id="stress_figure")
            with gr.Column():
                stress_pred = gr.Markdown(elem_id="stress_pred")
                stress_cmd = gr.Code(label="command line", language="shell", elem_id="stress_cmd",
                                     wrap_lines=True)

        model_inputs = [source, zoo, run_dir, ckpt, arch, ncls]
        load_btn.click(on_load_model, model_inputs, [model_info, target, layer])
        image_event = dict(fn=on_images, inputs=[*model_inputs, files, samples], outputs=[status, prep, preds])
        files.change(**image_event)
        samples.change(**image_event)
        run = explain_btn.click(
            on_explain,
            [*model_inputs, files, samples, method_box, target, metric_box, view, alpha, ig_steps, ig_baseline,
             occ_window, occ_stride, lime_samples, lime_segments, rise_masks, rise_grid, rise_p, sg_noise,
             forgrad_sigma, layer],
            [status, maps, scores, explain_cmd, downloads, stress_method], **_ONE_AT_A_TIME)
        stop_btn.click(on_stop, None, status, cancels=[run])
        stress_inputs = [stress_method, row, attack, eps, corruption, severity, view, alpha]
        stress_outputs = [status, stress_img, stress_pred, stress_cmd]
        stress_btn.click(on_stress, stress_inputs, stress_outputs, **_ONE_AT_A_TIME)
        eps.release(on_stress, stress_inputs, stress_outputs, **_ONE_AT_A_TIME)
        severity.release(on_stress, stress_inputs, stress_outputs, **_ONE_AT_A_TIME)
        demo.load(on_load_model, model_inputs, [model_info, target, layer]).then(**image_event)
        demo.unload(_end_session)
    return demo


def main(argv: list[str] | None = None) -> None:
    """``xai-app [--host 127.0.0.1] [--port 7860]``: serve the app on this machine (offline)."""
    parser = argparse.ArgumentParser(prog="xai-app", description="The xai-bench web app: explain, score and "
                                     "stress-test an image classifier in the browser (localhost, offline).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help=f"upload limit (default {MAX_FILE_SIZE})")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("MPLBACKEND", "Agg")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from xai_bench.accel import keep_freed_cpu_memory

    keep_freed_cpu_memory()  # as the tasks do: freed tensor pages stay in the process for the next pass
    launch(build_app(), host=args.host, port=args.port, max_file_size=args.max_file_size, block=True)


def launch(demo: Any, *, host: str = "127.0.0.1", port: int = 7860, max_file_size: str = MAX_FILE_SIZE,
           block: bool = False) -> Any:
    """Start the server (``block=False``: in a background thread, as the tests do). Returns the Blocks."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: works offline
                              font_mono=["ui-monospace", "monospace"])
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=host, server_port=port, max_file_size=max_file_size, share=False, ssr_mode=False,
                prevent_thread_lock=not block, inbrowser=False, quiet=True, theme=theme, footer_links=[],
                allowed_paths=[tempfile.gettempdir()])
    return demo

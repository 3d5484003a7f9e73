"""Long methods report progress per batch, with an ETA, readable in logs (issue 9)."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.attribution import RISE, ScoreCAM
from xai_bench.batching import run_batched
from xai_bench.progress import ProgressBar, progress_enabled, progress_reporting


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3)).eval()


def test_rise_reports_increasing_counts_up_to_the_total():
    calls = []
    x = torch.rand(2, 3, 16, 16)
    with progress_reporting(enabled=False, callback=lambda desc, done, total: calls.append((desc, done, total))):
        RISE(_cnn()).attribute(x, n_masks=100, batch_size=16, seed=0)
    assert calls and all(desc == "RISE" and total == 200 for desc, _, total in calls)  # masks × images
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done) and done[-1] == 200
    assert len(done) >= 200 // 16  # one report per batch of masked images


def test_scorecam_reports_per_batch_of_masked_inputs():
    calls = []
    with progress_reporting(enabled=False, callback=lambda desc, done, total: calls.append((desc, done, total))):
        model = _cnn()
        ScoreCAM(model, model[1]).attribute(torch.rand(2, 3, 8, 8), batch_size=4)
    assert calls[-1] == ("Score-CAM", 16, 16) and len(calls) == 4


def test_non_terminal_output_is_a_bounded_number_of_log_lines(caplog):
    stream = io.StringIO()  # not a terminal
    with caplog.at_level(logging.INFO, logger="xai_bench.progress"), progress_reporting(file=stream):
        RISE(_cnn()).attribute(torch.rand(1, 3, 8, 8), n_masks=1000, batch_size=4, seed=0)  # 250 batches
    lines = [r.getMessage() for r in caplog.records if r.name == "xai_bench.progress"]
    assert 2 <= len(lines) <= 11, lines
    assert "ETA" in lines[0] and "100%" in lines[-1] and "(1000/1000 img)" in lines[-1]
    assert stream.getvalue() == ""  # no tqdm carriage-return refreshes


def test_quiet_by_default_and_unlabelled_loops_stay_quiet():
    assert not progress_enabled() and progress_enabled(True)
    calls = []
    with progress_reporting(callback=lambda *a: calls.append(a), file=io.StringIO()):
        assert progress_enabled()
        run_batched(lambda s: torch.zeros(s.stop - s.start), 10, 3)  # an image batch inside a task: no report
        run_batched(lambda s: torch.zeros(s.stop - s.start), 10, 3, desc="work")
    assert [c[1] for c in calls] == [3, 6, 9, 10]
    assert not progress_enabled()


def test_progress_bar_iterates_like_tqdm():
    calls = []
    with progress_reporting(enabled=False, callback=lambda *a: calls.append(a)):
        assert list(ProgressBar(range(3), desc="loop")) == [0, 1, 2]
    assert calls == [("loop", 1, 3), ("loop", 2, 3), ("loop", 3, 3)]


def test_captum_perturbation_bars_go_through_ours():
    from captum.attr import Occlusion

    calls = []
    with progress_reporting(callback=lambda *a: calls.append(a), file=io.StringIO()):
        Occlusion(_cnn()).attribute(torch.rand(1, 3, 8, 8), target=0, sliding_window_shapes=(3, 4, 4),
                                    strides=(3, 4, 4), show_progress=True)
    assert calls and calls[-1][1] == calls[-1][2] == 5  # 4 windows + the unperturbed forward
    import captum._utils.progress as captum_progress
    from tqdm.auto import tqdm

    assert captum_progress.tqdm is tqdm  # restored after the block
    assert "_attribute_progress_setup" not in Occlusion.__dict__


def test_scorecam_max_channels_scores_the_most_varied_channels():
    model = _cnn()
    x = torch.rand(2, 3, 8, 8)
    cam = ScoreCAM(model, model[1])
    full = cam.attribute(x, relu_attributions=False)
    assert torch.allclose(cam.attribute(x, relu_attributions=False, max_channels=8), full, atol=1e-6)
    calls = []
    with progress_reporting(enabled=False, callback=lambda *a: calls.append(a)):
        part = cam.attribute(x, relu_attributions=False, max_channels=3)
    assert calls[-1][2] == 2 * 3 and part.shape == full.shape and torch.isfinite(part).all()
    with pytest.raises(ValueError, match="max_channels"):
        cam.attribute(x, max_channels=0)

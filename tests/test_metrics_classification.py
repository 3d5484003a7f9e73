"""Classification metrics: ECE is exact on hand-made values and matches Guo et al.'s reference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_bench.metrics import calibration_bins, expected_calibration_error, predict


def test_ece_zero_when_every_bin_is_calibrated() -> None:
    conf = np.array([0.5] * 10 + [0.9] * 10)
    correct = np.array([1] * 5 + [0] * 5 + [1] * 9 + [0])
    assert expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_overconfident_half_right_is_half() -> None:
    conf = torch.ones(8)
    correct = torch.tensor([True, False] * 4)
    assert expected_calibration_error(conf, correct, n_bins=15) == pytest.approx(0.5)


def test_ece_hand_computed_two_bins() -> None:
    # bin (0.9, 1]: acc 0.5, conf 0.95 → gap 0.45; bin (0.2, 0.3]: acc 0, conf 0.25 → gap 0.25; equal weights
    ece = expected_calibration_error([0.95, 0.95, 0.25, 0.25], [1, 0, 0, 0], n_bins=10)
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.25)


def test_ece_bins_are_right_closed() -> None:
    # 0.5 belongs to (0, 0.5] with 0.2 (acc 0.5, conf 0.35); 0.75 alone in (0.5, 1] (acc 1, conf 0.75)
    ece = expected_calibration_error([0.2, 0.5, 0.75], [0, 1, 1], n_bins=2)
    assert ece == pytest.approx((2 / 3) * 0.15 + (1 / 3) * 0.25)


def test_ece_matches_reference_loop() -> None:
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    correct = rng.random(500) < conf
    edges = np.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):  # Guo et al.'s reference implementation
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ref += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert expected_calibration_error(conf, correct) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize(
    ("conf", "correct", "match"),
    [([0.5, 1.5], [1, 0], "confidences"), ([0.5], [1, 0], "one entry"), ([0.5], [2], "correct"), ([], [], "empty")],
)
def test_ece_rejects_bad_input(conf, correct, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(conf, correct)


def test_calibration_bins_counts_means_and_ece() -> None:
    bins = calibration_bins([0.95, 0.95, 0.25, 0.25], torch.tensor([True, False, False, False]), n_bins=10)
    np.testing.assert_array_equal(bins.counts, [0, 0, 2, 0, 0, 0, 0, 0, 0, 2])
    assert bins.accuracy[9] == pytest.approx(0.5) and bins.confidence[2] == pytest.approx(0.25)
    assert bins.ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.25)


def test_predict_scores_reference_sets_and_restores_train_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 4), torch.nn.Dropout(0.5)).train()
    x = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    accept = torch.tensor([[True, False, False, False], [False, True, True, False], [False] * 4])
    loader = [{"image": x, "label": torch.tensor([0, 1, -1]), "accept": accept}]
    p = predict(model, loader, torch.device("cpu"))  # type: ignore[arg-type]
    assert model.training and model[2].training  # eval only while predicting
    torch.testing.assert_close(p.probs, model.eval()(x).softmax(1))  # dropout was off
    assert p.accept.equal(accept) and p.names == ["0", "1", "2"]
    plain = predict(model, [{"image": x, "label": torch.tensor([2, -1, 0])}], torch.device("cpu"))  # type: ignore[arg-type]
    assert plain.accept.equal(torch.tensor([[False, False, True, False], [False] * 4, [True, False, False, False]]))

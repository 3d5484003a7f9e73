"""Ensemble uncertainty: hand-made probability tables with known entropies, votes and correctness."""

from __future__ import annotations

import math

import pytest
import torch

from xai_bench.robustness.uncertainty import (
    expected_entropy,
    majority_vote,
    mean_probability,
    mutual_information,
    predictive_entropy,
    rank_by_certainty,
    uncertainty_table,
)

LN2, LN3 = math.log(2), math.log(3)


def _probs(*members: list[list[float]]) -> torch.Tensor:
    return torch.tensor(members, dtype=torch.float64)  # [M, N, K]


def test_agreeing_one_hot_members_have_zero_uncertainty():
    probs = _probs([[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, 1, 0]])
    assert torch.equal(predictive_entropy(probs), torch.zeros(2, dtype=torch.float64))  # 0·log 0 = 0, no NaN
    assert torch.equal(expected_entropy(probs), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(mutual_information(probs), torch.zeros(2, dtype=torch.float64))
    classes, agreement, votes = majority_vote(probs)
    assert classes.tolist() == [0, 1] and agreement.tolist() == [1.0, 1.0]
    assert votes.tolist() == [[3, 0, 0], [0, 3, 0]]


def test_disagreeing_one_hot_members_are_purely_epistemic():
    probs = _probs([[1, 0]], [[0, 1]])
    torch.testing.assert_close(predictive_entropy(probs), torch.tensor([LN2], dtype=torch.float64))
    torch.testing.assert_close(expected_entropy(probs), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(mutual_information(probs), torch.tensor([LN2], dtype=torch.float64))
    _, agreement, _ = majority_vote(probs)
    assert agreement.tolist() == [0.5]


def test_agreeing_uniform_members_are_purely_aleatoric():
    probs = _probs([[1 / 3, 1 / 3, 1 / 3]], [[1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(predictive_entropy(probs), torch.tensor([LN3], dtype=torch.float64))
    torch.testing.assert_close(expected_entropy(probs), torch.tensor([LN3], dtype=torch.float64))
    torch.testing.assert_close(mutual_information(probs), torch.tensor([0.0], dtype=torch.float64))


def test_mixed_case_matches_hand_computation():
    probs = _probs([[0.5, 0.5]], [[1.0, 0.0]])  # mean (0.75, 0.25)
    h_mean = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(predictive_entropy(probs), torch.tensor([h_mean], dtype=torch.float64))
    torch.testing.assert_close(expected_entropy(probs), torch.tensor([LN2 / 2], dtype=torch.float64))
    torch.testing.assert_close(mutual_information(probs), torch.tensor([h_mean - LN2 / 2], dtype=torch.float64))
    torch.testing.assert_close(mean_probability(probs), torch.tensor([[0.75, 0.25]], dtype=torch.float64))


def test_vote_ties_are_broken_by_mean_probability():
    # Two votes each for class 0 and class 2; class 2 has the higher mean probability, so it wins.
    probs = _probs([[0.6, 0.0, 0.4]], [[0.6, 0.0, 0.4]], [[0.0, 0.1, 0.9]], [[0.1, 0.0, 0.9]])
    classes, agreement, votes = majority_vote(probs)
    assert votes.tolist() == [[2, 0, 2]]
    assert classes.tolist() == [2] and agreement.tolist() == [0.5]
    # A full tie (same votes, same mean probability) goes to the lower class index.
    classes, _, _ = majority_vote(_probs([[1.0, 0.0]], [[0.0, 1.0]]))
    assert classes.tolist() == [0]
    # More votes beat a higher mean probability.
    classes, agreement, _ = majority_vote(_probs([[0.51, 0.49]], [[0.51, 0.49]], [[0.0, 1.0]]))
    assert classes.tolist() == [0] and agreement.tolist() == pytest.approx([2 / 3])


def test_uncertainty_table_with_multi_hot_accept():
    probs = _probs([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], [[0.7, 0.3, 0.0], [0.1, 0.8, 0.1]])
    accept = torch.tensor([[False, True, False], [True, True, False]])  # image 1 accepts classes 0 and 1
    rows = uncertainty_table(probs, ["cat", "dog", "fox"], ["a.png", "b.png"], accept,
                             member_names=["resnet", "vit"])
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    a, b = rows
    assert a["ensemble_class"] == "cat" and a["ensemble_prob"] == pytest.approx(0.8)
    assert a["correct"] is False and a["vote_agreement"] == 1.0
    assert a["resnet_class"] == "cat" and a["resnet_prob"] == pytest.approx(0.9) and a["resnet_correct"] is False
    assert b["ensemble_class"] == "dog" and b["ensemble_prob"] == pytest.approx(0.55) and b["correct"] is True
    assert b["resnet_class"] == "fox" and b["resnet_correct"] is False
    assert b["vit_class"] == "dog" and b["vit_correct"] is True
    # Vote tie (fox vs dog, one each) broken by mean probability: dog 0.55 > fox 0.3.
    assert b["vote_class"] == "dog" and b["vote_agreement"] == 0.5 and b["vote_correct"] is True
    assert b["entropy"] == pytest.approx(predictive_entropy(probs)[1].item())
    assert b["mutual_information"] == pytest.approx(mutual_information(probs)[1].item())
    assert "correct" not in uncertainty_table(probs, ["cat", "dog", "fox"], ["a.png", "b.png"])[0]


def test_rank_by_certainty_orders_by_entropy_then_mutual_information():
    probs = _probs(
        [[0.5, 0.5], [1.0, 0.0], [1.0, 0.0], [0.5, 0.5]],
        [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]],
    )
    # Entropies: ln2, 0, ln2, ln2. MI: 0, 0, ln2, 0 → image 1 first, then images 0 and 3 (MI 0, stable), then 2.
    assert rank_by_certainty(probs).tolist() == [1, 0, 3, 2]


def test_rank_ties_tolerate_rounding_noise():
    p = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float32)
    probs = torch.stack([p[[2, 0, 1]], p[[0, 1, 2]]])[None]  # same distribution, classes permuted
    assert rank_by_certainty(probs).tolist() == [0, 1]


@pytest.mark.parametrize("bad, match", [
    (torch.rand(2, 3), "shape"),
    (torch.tensor([[[2.0, -1.0]]]), "softmax"),
    (torch.tensor([[[0.2, 0.2]]]), "softmax"),
    (torch.tensor([[[1, 0]]]), "float"),
])
def test_bad_probs_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        predictive_entropy(bad)


def test_table_argument_checks():
    probs = _probs([[0.5, 0.5]])
    with pytest.raises(ValueError, match="class_names"):
        uncertainty_table(probs, ["a"], ["x"])
    with pytest.raises(ValueError, match="image_names"):
        uncertainty_table(probs, ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="accept"):
        uncertainty_table(probs, ["a", "b"], ["x"], accept=torch.ones(2, 2, dtype=torch.bool))

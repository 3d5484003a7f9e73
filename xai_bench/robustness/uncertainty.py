"""Ensemble combination and uncertainty from stacked member probabilities ``probs: Tensor[M, N, K]``.

M members, N images, K classes; each ``probs[m, n]`` is a probability vector (softmax output, not logits).
All entropies use the natural log (nats), with ``0 · log 0 = 0``, so a one-hot vector has entropy exactly 0 and
the uniform distribution over K classes has entropy ``ln K``.

The decomposition is the usual one for Bayesian/deep ensembles (Houlsby et al. 2011, "BALD"; Depeweg et al. 2018):
``predictive_entropy = expected_entropy (aleatoric) + mutual_information (epistemic)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "expected_entropy",
    "majority_vote",
    "mean_probability",
    "mutual_information",
    "predictive_entropy",
    "rank_by_certainty",
    "uncertainty_table",
]


def _check_probs(probs: Tensor, atol: float = 1e-3) -> Tensor:
    if not isinstance(probs, Tensor) or probs.ndim != 3:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a tensor of shape (M members, N images, K classes), got {shape}; "
                         f"stack member outputs with torch.stack([p_1, …, p_M])")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a float tensor, got dtype {probs.dtype}")
    if probs.shape[0] == 0 or probs.shape[2] == 0:
        raise ValueError(f"probs needs at least one member and one class, got shape {tuple(probs.shape)}")
    if probs.numel():
        sums = probs.sum(dim=-1)
        if probs.min() < 0 or (sums - 1).abs().max() > atol:
            raise ValueError("probs must hold probability vectors along the last axis (≥ 0, summing to 1); "
                             "apply .softmax(dim=-1) to logits first")
    return probs


def _entropy(p: Tensor) -> Tensor:
    # entr(x) = -x·ln(x) with entr(0) = 0: safe at p = 0, no NaN from 0·log 0.
    return torch.special.entr(p).sum(dim=-1)


def mean_probability(probs: Tensor) -> Tensor:
    """Soft-voting ensemble: the members' average probability vector.

    Args:
        probs: ``[M, N, K]`` member probabilities.

    Returns:
        ``[N, K]`` mean probabilities.
    """
    return _check_probs(probs).mean(dim=0)


def majority_vote(probs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hard-voting ensemble: each member votes for its top class.

    Ties between classes with equally many votes are broken by the higher mean probability (soft vote), and any
    remaining tie by the lower class index. A member whose own top probability is tied votes for the lower index.

    Args:
        probs: ``[M, N, K]`` member probabilities.

    Returns:
        ``(classes [N] long, agreement [N] float = fraction of members voting for the winning class,
        votes [N, K] long)``.
    """
    probs = _check_probs(probs)
    m, _, k = probs.shape
    votes = torch.nn.functional.one_hot(probs.argmax(dim=-1), k).sum(dim=0)
    tied = votes == votes.amax(dim=-1, keepdim=True)
    classes = probs.mean(dim=0).masked_fill(~tied, float("-inf")).argmax(dim=-1)
    agreement = votes.gather(1, classes[:, None]).squeeze(1).to(probs.dtype) / m
    return classes, agreement, votes


def predictive_entropy(probs: Tensor) -> Tensor:
    """Total uncertainty: entropy (nats) of the mean probability, ``H[E_m p_m]``.

    Args:
        probs: ``[M, N, K]`` member probabilities.

    Returns:
        ``[N]`` entropies in ``[0, ln K]``.
    """
    return _entropy(mean_probability(probs))


def expected_entropy(probs: Tensor) -> Tensor:
    """Aleatoric uncertainty: mean (over members) of each member's entropy (nats), ``E_m H[p_m]``.

    Args:
        probs: ``[M, N, K]`` member probabilities.

    Returns:
        ``[N]`` entropies in ``[0, ln K]``.
    """
    return _entropy(_check_probs(probs)).mean(dim=0)


def mutual_information(probs: Tensor) -> Tensor:
    """Epistemic uncertainty (BALD; Houlsby et al. 2011): predictive minus expected entropy, in nats.

    It is 0 when all members agree and reaches ``ln M`` or ``ln K`` (the smaller) when confident members disagree
    completely. Tiny negative values from rounding are clipped to 0 (Jensen's inequality makes it ≥ 0).

    Args:
        probs: ``[M, N, K]`` member probabilities.

    Returns:
        ``[N]`` mutual information between the prediction and the member index.
    """
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0)


def rank_by_certainty(probs: Tensor, *, decimals: int = 6) -> Tensor:
    """Image order from most to least certain: ascending predictive entropy, ties by ascending mutual information.

    Args:
        probs: ``[M, N, K]`` member probabilities.
        decimals: entropies equal after rounding to this many decimals count as tied (so that rounding noise
            between, e.g., class-permuted copies of one distribution does not decide the order; float32 entropies
            carry errors around 1e-7). Default: 6.

    Returns:
        ``[N]`` long indices into the image axis; ties on both keys keep the original order.
    """
    h = predictive_entropy(probs).double().round(decimals=decimals)
    mi = mutual_information(probs).double().round(decimals=decimals)
    # Two stable sorts give a lexicographic order: secondary key first, then primary key.
    order = torch.sort(mi, stable=True).indices
    return order[torch.sort(h[order], stable=True).indices]


def uncertainty_table(probs: Tensor, class_names: Sequence[str], image_names: Sequence[str],
                      accept: Tensor | None = None, *,
                      member_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One flat row per image describing the ensemble's prediction and its uncertainty (ready for CSV/W&B tables).

    Args:
        probs: ``[M, N, K]`` member probabilities.
        class_names: K class names.
        image_names: N image names.
        accept: optional ``Bool[N, K]`` multi-hot "reference set": the classes counted as correct for each image.
        member_names: M member names used as column prefixes (default ``"m0"``, ``"m1"``, …).

    Returns:
        N dicts with ``image``, ``ensemble_class`` / ``ensemble_index`` / ``ensemble_prob`` (argmax of the mean
        probability), ``vote_class`` / ``vote_agreement`` (majority vote), ``entropy`` (predictive, nats),
        ``expected_entropy``, ``mutual_information``, ``<member>_class`` / ``<member>_prob`` per member and, when
        ``accept`` is given, ``correct`` (ensemble class accepted), ``vote_correct`` and ``<member>_correct``.
    """
    probs = _check_probs(probs)
    m, n, k = probs.shape
    if len(class_names) != k:
        raise ValueError(f"class_names has {len(class_names)} names but probs has {k} classes")
    if len(image_names) != n:
        raise ValueError(f"image_names has {len(image_names)} names but probs has {n} images")
    member_names = [f"m{i}" for i in range(m)] if member_names is None else list(member_names)
    if len(member_names) != m:
        raise ValueError(f"member_names has {len(member_names)} names but probs has {m} members")
    if accept is not None:
        accept = torch.as_tensor(accept, device=probs.device)
        if accept.shape != (n, k):
            raise ValueError(f"accept must be a Bool[N={n}, K={k}] multi-hot tensor, got shape {tuple(accept.shape)}")
        accept = accept.bool()

    mean = probs.mean(dim=0)
    ens_prob, ens_cls = mean.max(dim=-1)
    vote_cls, agreement, _ = majority_vote(probs)
    member_prob, member_cls = probs.max(dim=-1)  # [M, N]
    columns = {
        "ens_cls": ens_cls, "ens_prob": ens_prob, "vote_cls": vote_cls, "agreement": agreement,
        "entropy": predictive_entropy(probs), "expected": expected_entropy(probs),
        "mi": mutual_information(probs), "member_cls": member_cls.T, "member_prob": member_prob.T,
    }
    if accept is not None:
        columns["correct"] = accept.gather(1, ens_cls[:, None]).squeeze(1)
        columns["vote_correct"] = accept.gather(1, vote_cls[:, None]).squeeze(1)
        columns["member_correct"] = accept.gather(1, member_cls.T)
    cols = {key: value.tolist() for key, value in columns.items()}  # one device → host copy for the whole table

    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "image": image_names[i],
            "ensemble_class": class_names[cols["ens_cls"][i]],
            "ensemble_index": cols["ens_cls"][i],
            "ensemble_prob": cols["ens_prob"][i],
            "vote_class": class_names[cols["vote_cls"][i]],
            "vote_agreement": cols["agreement"][i],
            "entropy": cols["entropy"][i],
            "expected_entropy": cols["expected"][i],
            "mutual_information": cols["mi"][i],
        }
        if accept is not None:
            row["correct"] = cols["correct"][i]
            row["vote_correct"] = cols["vote_correct"][i]
        for j, name in enumerate(member_names):
            row[f"{name}_class"] = class_names[cols["member_cls"][i][j]]
            row[f"{name}_prob"] = cols["member_prob"][i][j]
            if accept is not None:
                row[f"{name}_correct"] = cols["member_correct"][i][j]
        rows.append(row)
    return rows

"""Pearson chi-square tests on bigram transition counts: the sampling half of the parity checks.

The counts come from `bigram_jax.counts.sequence_counts`; the p-values from scipy's chi-square law.
"""
from __future__ import annotations

import math

import numpy as np

MIN_EXPECTED = 5.0  # the usual rule: below 5 expected counts a cell is pooled, or the chi-square law is off


def _p_value(stat: float, dof: int) -> float:
    """P(X >= stat), X ~ chi-square(dof), by scipy; 1 with nothing to test (dof 0), 0 for an inf or NaN stat."""
    if dof <= 0:
        return 1.0
    if math.isnan(stat):
        return 0.0
    from scipy.stats import (
        chi2,  # here, not at the top: `import torch_ref` stays light (scipy costs ~0.3 s)
    )

    return float(chi2.sf(stat, dof))


def topk_probs(table: np.ndarray, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
    """Row-wise softmax(table / temperature) keeping the top_k logits of each row, renormalized; float64."""
    logits = np.asarray(table, np.float64) / temperature
    if top_k is not None:
        cut = np.sort(logits, axis=1)[:, -top_k][:, None]  # k-th largest per row (random tables: no ties)
        logits = np.where(logits >= cut, logits, -np.inf)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _pearson(obs: np.ndarray, exp: np.ndarray) -> tuple[float, int]:
    """Statistic and degrees of freedom of one row of S samples: obs, exp (S, K); small cells pooled."""
    if np.any((exp.sum(0) == 0) & (obs.sum(0) > 0)):
        return math.inf, 1  # a draw the distribution forbids (e.g. outside the top-k): no chi-square needed
    keep = exp.min(0) >= MIN_EXPECTED
    bins_o, bins_e = [obs[:, keep]], [exp[:, keep]]
    rest_o, rest_e = obs[:, ~keep].sum(1, keepdims=True), exp[:, ~keep].sum(1, keepdims=True)  # (S, 1)
    if rest_e.sum() > 0:
        if rest_e.min() >= MIN_EXPECTED or not keep.any():
            bins_o.append(rest_o)
            bins_e.append(rest_e)
        else:  # the pooled rest is still too small: fold it into the smallest kept cell
            j = int(np.argmin(bins_e[0].min(0)))
            bins_o[0] = bins_o[0].copy()
            bins_e[0] = bins_e[0].copy()
            bins_o[0][:, j] += rest_o[:, 0]
            bins_e[0][:, j] += rest_e[:, 0]
    o, e = np.concatenate(bins_o, 1), np.concatenate(bins_e, 1)  # (S, bins)
    if o.shape[1] < 2 or e.min() <= 0:
        return 0.0, 0  # nothing left to test in this row (too few visits)
    return float(((o - e) ** 2 / e).sum()), o.shape[1] - 1  # (bins-1)(S-1) with S = 1 or 2


def goodness_of_fit(counts: np.ndarray, probs: np.ndarray) -> float:
    """p-value that counts[i] ~ Multinomial(n_i, probs[i]) for every previous token i; (V, V) both."""
    stat, dof = 0.0, 0
    for obs, p in zip(counts.astype(np.float64), probs.astype(np.float64)):
        s, d = _pearson(obs[None], obs.sum() * p[None])
        stat, dof = stat + s, dof + d
    return _p_value(stat, dof)


def homogeneity(a: np.ndarray, b: np.ndarray) -> float:
    """p-value that two (V, V) transition count tables come from the same conditional distributions."""
    stat, dof = 0.0, 0
    for ra, rb in zip(a.astype(np.float64), b.astype(np.float64)):
        obs = np.stack([ra, rb])  # (2, V)
        n = obs.sum(1, keepdims=True)
        if n.min() == 0:
            continue  # a token one sampler never visited says nothing about the two samplers
        s, d = _pearson(obs, n * obs.sum(0) / n.sum())
        stat, dof = stat + s, dof + d
    return _p_value(stat, dof)

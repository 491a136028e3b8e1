"""A tenant's own correction to the shipped model: a small logistic model fitted on its labels.

    logit = (1 + a) * g + b + sum_j d_j * x_j

g is the shipped model's logit of the mail (text weights and indicator priors), x its hashed
feature vector (the shipped model's buckets folded into TENANT_BUCKETS), and (a, b, d) the
tenant's parameters, fitted on its labelled mails with L2 penalties that pull them to zero: with
no labels the shipped model decides alone, and every label moves the verdict only as far as the
tenant's own evidence carries it. Discriminative, unlike counting tokens per class: a token that
shows up in both a tenant's spam and its ham gets the weight that separates them, not the sum of
two overconfident rates (a naive-Bayes term lowered recall at 1% FPR on mail the shipped model
already knew well; docs/benchmarks.md "Classifier").

numpy only: the fit is a limited-memory BFGS over sparse rows kept as (row, bucket, value)
arrays, bounded by MAX_EXAMPLES rows and MAX_ITER iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TENANT_BUCKETS = 1 << 16
# Penalties: on the bucket weights, and on the scale and offset of the shipped model's logit.
L2_WEIGHTS = 0.01
L2_GLOBAL = 10.0
# Bounded work per refit: at most MAX_ITER iterations of at most MAX_HALVINGS evaluations each,
# over at most MAX_EXAMPLES rows (the tenant's newest labels). On the training-folder split 50
# iterations scored as 150 and 600 did.
MAX_ITER = 60
MAX_HALVINGS = 20
MAX_EXAMPLES = 1000


@dataclass(frozen=True)
class Examples:
    """Labelled mails as sparse rows: row i has values vals[ptr[i]:ptr[i+1]] at cols[...]."""

    ptr: np.ndarray  # int64, n + 1
    cols: np.ndarray  # int64, bucket in [0, TENANT_BUCKETS)
    vals: np.ndarray  # float64
    base: np.ndarray  # float64, the shipped model's logit of each mail
    y: np.ndarray  # float64, 1 spam, 0 ham
    w: np.ndarray | None = None  # float64 per-example weight (None: 1)

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @staticmethod
    def build(
        rows: list[tuple[np.ndarray, np.ndarray]], base: list[float], y: list[int]
    ) -> Examples:
        lengths = np.array([len(idx) for idx, _ in rows], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if rows:
            cols = np.concatenate([idx for idx, _ in rows]).astype(np.int64) & (TENANT_BUCKETS - 1)
            vals = np.concatenate([v for _, v in rows]).astype(np.float64)
        else:
            cols, vals = np.zeros(0, dtype=np.int64), np.zeros(0)
        return Examples(
            ptr=ptr,
            cols=cols,
            vals=vals,
            base=np.asarray(base, dtype=np.float64),
            y=np.asarray(y, dtype=np.float64),
        )


@dataclass(frozen=True)
class TenantModel:
    scale: float  # a: the shipped logit counts (1 + a) times
    offset: float  # b
    weights: np.ndarray  # d, float32, TENANT_BUCKETS

    def logit(self, base: float, idx: np.ndarray, values: np.ndarray) -> float:
        folded = idx & (TENANT_BUCKETS - 1)
        delta = float(np.dot(self.weights[folded].astype(np.float64), values))
        return (1.0 + self.scale) * base + self.offset + delta


def _objective(
    theta: np.ndarray, ex: Examples, rows: np.ndarray, lam: float, mu: float, fit_global: bool
) -> tuple[float, np.ndarray]:
    a, b, d = theta[0], theta[1], theta[2:]
    z = ex.base * (1.0 + a) + b + np.bincount(rows, weights=ex.vals * d[ex.cols], minlength=ex.n)
    sign = 2.0 * ex.y - 1.0
    m = sign * z
    per = np.logaddexp(0.0, -m)
    # d loss / d z = -sign * sigmoid(-m)
    r = -sign / (1.0 + np.exp(np.clip(m, -50, 50)))
    if ex.w is not None:
        per, r = per * ex.w, r * ex.w
    loss = float(per.sum())
    grad = np.empty_like(theta)
    grad[2:] = np.bincount(ex.cols, weights=ex.vals * r[rows], minlength=d.shape[0]) + lam * d
    if fit_global:
        grad[0] = float(np.dot(r, ex.base)) + mu * a
        grad[1] = float(r.sum()) + mu * b
    else:
        grad[0] = grad[1] = 0.0
    loss += 0.5 * lam * float(np.dot(d, d)) + 0.5 * mu * (a * a + b * b)
    return loss, grad


def fit(
    ex: Examples,
    *,
    lam: float = L2_WEIGHTS,
    mu: float = L2_GLOBAL,
    fit_global: bool = True,
    start: TenantModel | None = None,
    max_iter: int = MAX_ITER,
) -> TenantModel:
    """Minimise the penalised log-loss by L-BFGS (10 pairs) with a backtracking line search."""
    rows = np.repeat(np.arange(ex.n), np.diff(ex.ptr))
    theta = np.zeros(2 + TENANT_BUCKETS)
    if start is not None:
        theta[0], theta[1] = start.scale, start.offset
        theta[2:] = start.weights
    f, g = _objective(theta, ex, rows, lam, mu, fit_global)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        if float(np.abs(g).max()) < 1e-5:
            break
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / float(np.dot(yv, s))
            alpha = rho * float(np.dot(s, q))
            q -= alpha * yv
            alphas.append((rho, alpha))
        if s_hist:
            q *= float(np.dot(s_hist[-1], y_hist[-1])) / float(np.dot(y_hist[-1], y_hist[-1]))
        else:
            q *= 1.0 / max(1.0, float(np.abs(g).max()))
        for (s, yv), (rho, alpha) in zip(
            zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True
        ):
            beta = rho * float(np.dot(yv, q))
            q += (alpha - beta) * s
        direction = -q
        slope = float(np.dot(g, direction))
        if slope >= 0:
            direction, slope = -g, -float(np.dot(g, g))
            s_hist.clear()
            y_hist.clear()
        step = 1.0
        for _ in range(MAX_HALVINGS):
            new = theta + step * direction
            f_new, g_new = _objective(new, ex, rows, lam, mu, fit_global)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        s_vec, y_vec = new - theta, g_new - g
        if float(np.dot(s_vec, y_vec)) > 1e-10:
            s_hist.append(s_vec)
            y_hist.append(y_vec)
            if len(s_hist) > 10:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = f - f_new < 1e-7 * max(1.0, abs(f))
        theta, f, g = new, f_new, g_new
        if converged:
            break
    return TenantModel(
        scale=float(theta[0]), offset=float(theta[1]), weights=theta[2:].astype(np.float32)
    )


# The naive-Bayes correction over the same buckets (the token group only: words, subject,
# URLs, sender; not the thousands of character 4-grams), with the shrinkage of the token
# counts it came from: Robinson's prior STRENGTH, the evidence of n labels scaled by
# n / (n + SHRINK), and only the STRONGEST buckets for a tenant that has not taught both kinds.
NB_STRENGTH = 1.0
NB_SHRINK = 3.0
NB_STRONGEST = 15


@dataclass(frozen=True)
class NaiveBayes:
    spam: np.ndarray  # int32 per bucket: the tenant's spam labels holding it
    ham: np.ndarray  # int32 per bucket: its ham labels holding it
    n_spam: int
    n_ham: int
    terms: np.ndarray  # float64 per bucket: the log-odds of Robinson's f (0 where unseen)

    @staticmethod
    def build(spam: np.ndarray, ham: np.ndarray, n_spam: int, n_ham: int) -> NaiveBayes:
        s, h = spam.astype(np.float64), ham.astype(np.float64)
        rate_s, rate_h = s / max(n_spam, 1), h / max(n_ham, 1)
        seen = (s + h) > 0
        p = np.where(seen, rate_s / np.where(seen, rate_s + rate_h, 1.0), 0.5)
        n = s + h
        f = (NB_STRENGTH * 0.5 + n * p) / (NB_STRENGTH + n)
        terms = np.where(seen, np.log(f / (1.0 - f)), 0.0)
        return NaiveBayes(spam=spam, ham=ham, n_spam=n_spam, n_ham=n_ham, terms=terms)

    def delta(self, tokens: np.ndarray, *, every_term: bool) -> float:
        """Log-odds from the mail's distinct token buckets (uncapped)."""
        total = self.n_spam + self.n_ham
        if total == 0 or not len(tokens):
            return 0.0
        t = self.terms[np.unique(tokens & (TENANT_BUCKETS - 1))]
        if not every_term and len(t) > NB_STRONGEST:
            t = t[np.argpartition(-np.abs(t), NB_STRONGEST)[:NB_STRONGEST]]
        return float(t.sum()) * total / (total + NB_SHRINK)


def fit_nb(tokens: list[np.ndarray], y: np.ndarray) -> NaiveBayes:
    """Count, per bucket, the spam and ham labels that hold it (each mail once)."""
    spam = np.zeros(TENANT_BUCKETS, dtype=np.int64)
    ham = np.zeros(TENANT_BUCKETS, dtype=np.int64)
    for t, label in zip(tokens, y, strict=True):
        b = np.unique(t & (TENANT_BUCKETS - 1))
        (spam if label else ham)[b] += 1
    n_spam = int(np.sum(y))
    return NaiveBayes.build(spam.astype(np.int32), ham.astype(np.int32), n_spam, len(y) - n_spam)


# What a tenant gets: the logistic and the naive Bayes blended, NB_WEIGHT on the naive Bayes,
# for every tenant and label count. The weight was chosen on training-folder splits whose mail
# differs from the shipped model's in source (ham of a kind it never saw) and time (spam
# newer than its own), as the weight with the best worst split (scripts/tune_tenant.py).
# Per-tenant cross-validation (choose_kind: FOLDS folds, pooled out-of-fold partial AUC up to
# 1% FPR, widened to PAUC_MIN_HAM ham) picked the logistic wherever it was tried, also where
# the naive Bayes ranked the rest of the tenant's mail better: a tenant's own labels come from
# the same mail as each other, so they cannot show how a learner holds on the next source.
KINDS = ("blend",)
NB_WEIGHT = 0.25
NB_FULL_UNTIL = 100
NB_GONE_AT = 200
CV_KINDS = ("logistic", "mean", "nb")


def nb_weight(n_labels: int) -> float:
    """The naive Bayes' share of a tenant's blend: NB_WEIGHT up to NB_FULL_UNTIL labels, then
    falling linearly to 0 at NB_GONE_AT. With few labels the counts' shrinkage steadies the
    logistic's few, noisy weights; with many the logistic alone ranked best on the splits."""
    if n_labels <= NB_FULL_UNTIL:
        return NB_WEIGHT
    return NB_WEIGHT * max(0.0, (NB_GONE_AT - n_labels) / (NB_GONE_AT - NB_FULL_UNTIL))


FOLDS = 3
PAUC_FPR = 0.01
PAUC_MIN_HAM = 5


def partial_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from FPR 0 to max(PAUC_FPR, PAUC_MIN_HAM / n_ham), normalised."""
    pos, neg = scores[y == 1], np.sort(scores[y == 0])[::-1]
    if not len(pos) or not len(neg):
        return 0.0
    k = max(1, min(len(neg), max(math.ceil(PAUC_FPR * len(neg)), PAUC_MIN_HAM)))
    # Each of the k highest-scored ham is one FPR step; the TPR over it is the spam above it
    # (ties half).
    pos_sorted = np.sort(pos)
    above = len(pos) - np.searchsorted(pos_sorted, neg[:k], side="right")
    ties = np.searchsorted(pos_sorted, neg[:k], side="right") - np.searchsorted(
        pos_sorted, neg[:k], side="left"
    )
    return float(np.mean((above + 0.5 * ties) / len(pos)))

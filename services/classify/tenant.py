"""A tenant's own learning: its labels fit a correction to the shipped model, for it alone.

Each label (`POST /v1/messages/{id}/feedback`) stores the mail's hashed feature buckets
(`pack_example`: integers, never the mail's text) and counts one change for the tenant. The
label's transaction publishes a refit (its own task, `refit_when_due`, after the commit), which
once enough changes gathered fits a small logistic model on its newest MAX_EXAMPLES labels
(services/classify/tenant_fit.py): bucket weights plus a scale and offset of the shipped model's
log-odds, all pulled to zero, so with no labels the shipped model decides alone. A naive Bayes
over the mail's content buckets is fitted beside it, and the two corrections are blended with
a weight on the naive Bayes that falls as the labels grow (tenant_fit.nb_weight), chosen on
training-folder splits of another source and time than the shipped model's, never on the
tenant's own labels: cross-validation on one tenant's labels cannot see how a learner holds on
its next mail (docs/classifier.md "Which learner, per tenant"). The fit is stored as an `.npz`
of plain arrays in `tenant_spam_model` (read with `allow_pickle=False`) and
cached per worker process by its generation.

While a tenant has fewer than MATURE labels of either kind, only its bucket weights are fitted
and its correction is capped at +-CAP: a tenant that only ever reports spam must not shift
every verdict. With MATURE of each, the scale and offset are fitted too, capped at
+-MATURE_CAP: its own mail then knows more than the shipped model.
"""

from __future__ import annotations

import asyncio
import io
import math
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.repositories import classifier as repo
from services.classify import tenant_fit
from services.classify.features import Features
from services.classify.model import (
    N_BUCKETS,
    SpamModel,
    bucket_indices,
    default_model,
    feature_groups,
    group_vector,
    indicator_logit,
)

# Version of the stored example and model layouts: a row of another version is skipped (an
# example of version 1, without its content buckets marked, is still read).
FORMAT = 2
# Version of the stored model's layout (a model without a "kind" is a logistic one).
MODEL_FORMAT = 1
# Tokens the naive-Bayes correction counts: words, subject words, sender domain, URLs.
CONTENT_PREFIXES = ("w:", "s:", "fd:", "u:")
# At most this many per mail, the first in sorted order (as the token counts kept them).
CONTENT_TOKENS = 400
MATURE = 20
CAP = 10.0
MATURE_CAP = 30.0
# Refit when the changes since the last fit reach REFIT_SHARE of the labels it saw (at least
# one), or when any change is older than REFIT_AFTER: bounded work under a stream of labels.
REFIT_SHARE = 0.05
REFIT_AFTER = timedelta(seconds=60)
CACHED_TENANTS = 64


def content_buckets(found: Features, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """The buckets of the mail's content tokens (words, subject, sender domain, URLs): the ones
    the naive-Bayes correction counts, as the per-tenant token counts it replaced did."""
    picked = sorted({t[:100] for t in found.tokens if t.startswith(CONTENT_PREFIXES)})
    return bucket_indices(picked[:CONTENT_TOKENS], n_buckets)


def example_groups(found: Features, n_buckets: int = N_BUCKETS) -> list[np.ndarray]:
    """[token buckets, 4-gram buckets, content buckets]: what a stored example unpacks to.

    The first two are the shipped model's groups (`group_vector(groups[:2])`); the third a
    subset of the first.
    """
    return [*feature_groups(found, n_buckets), content_buckets(found, n_buckets)]


def pack_example(found: Features) -> bytes:
    """The mail's distinct buckets as little-endian int32.

    [FORMAT, n_tokens, n_content, tokens (content ones first), grams]
    """
    tokens, grams = feature_groups(found)
    content = content_buckets(found)
    rest = np.setdiff1d(tokens, content, assume_unique=True)
    head = np.array([FORMAT, len(tokens), len(content)], dtype=np.int64)
    return np.concatenate([head, content, rest, grams]).astype("<i4").tobytes()


def unpack_example(blob: bytes) -> list[np.ndarray] | None:
    """The bucket groups of a stored example (`example_groups`); None for another layout or a
    damaged row. A FORMAT 1 row (before content buckets were marked) counts all its tokens as
    content."""
    data = np.frombuffer(blob, dtype="<i4")
    if len(data) < 2 or int(data[0]) not in (1, FORMAT):
        return None
    skip = 2 if int(data[0]) == 1 else 3
    if len(data) < skip or not 0 <= int(data[1]) <= len(data) - skip:
        return None
    cut = skip + int(data[1])
    n_content = int(data[1]) if skip == 2 else int(data[2])
    if not 0 <= n_content <= int(data[1]):
        return None
    tokens = np.sort(data[skip:cut].astype(np.int64))
    groups = [tokens, data[cut:].astype(np.int64), data[skip : skip + n_content].astype(np.int64)]
    if any(len(g) and (g.min() < 0 or g.max() >= N_BUCKETS) for g in groups):
        return None
    return groups


@dataclass(frozen=True)
class Fitted:
    """A tenant's fitted correction, which kind it is, and how far it may move a verdict.

    kind "logistic" uses `model`, "nb" uses `nb`, "mean" the mean of both (each capped),
    "blend" both, weighted `nb_weight` on the naive Bayes and the rest on the logistic.
    """

    kind: str
    cap: float
    model: tenant_fit.TenantModel | None = None
    nb: tenant_fit.NaiveBayes | None = None
    nb_weight: float = 0.5

    def adjustment(self, base: float, groups: list[np.ndarray]) -> float:
        """Log-odds to add to the shipped model's `base` log-odds of the mail (`groups` as
        `example_groups`; the third, content buckets, is read only when `nb` is set)."""
        parts = []
        if self.model is not None:
            idx, values = group_vector(groups[:2])
            parts.append(self.model.logit(base, idx, values) - base)
        if self.nb is not None:
            parts.append(self.nb.delta(groups[2], every_term=self.cap == MATURE_CAP))
        capped = [max(-self.cap, min(self.cap, d)) for d in parts]
        if len(capped) == 2:
            return (1.0 - self.nb_weight) * capped[0] + self.nb_weight * capped[1]
        return capped[0] if capped else 0.0

    def dumps(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "format": np.array([MODEL_FORMAT], dtype=np.int64),
            "buckets": np.array([tenant_fit.TENANT_BUCKETS], dtype=np.int64),
            "kind": np.array([KIND_CODES.index(self.kind)], dtype=np.int64),
            "cap": np.array([self.cap], dtype=np.float64),
            "nb_weight": np.array([self.nb_weight], dtype=np.float64),
        }
        if self.model is not None:
            arrays["scale"] = np.array([self.model.scale], dtype=np.float64)
            arrays["offset"] = np.array([self.model.offset], dtype=np.float64)
            arrays["weights"] = self.model.weights.astype(np.float16)
        if self.nb is not None:
            arrays["nb_totals"] = np.array([self.nb.n_spam, self.nb.n_ham], dtype=np.int64)
            arrays["nb_spam"] = self.nb.spam.astype(np.uint16)
            arrays["nb_ham"] = self.nb.ham.astype(np.uint16)
        out = io.BytesIO()
        np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
        return out.getvalue()


# The stored kind is an index into this tuple (a plain integer array, no pickled string).
KIND_CODES = ("logistic", "nb", "mean", "blend")


def loads(blob: bytes) -> Fitted | None:
    """A stored model, read without pickle; None for another layout (refitted on next label)."""
    shape = (tenant_fit.TENANT_BUCKETS,)
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        if (
            int(data["format"][0]) != MODEL_FORMAT
            or int(data["buckets"][0]) != tenant_fit.TENANT_BUCKETS
        ):
            return None
        code = int(data["kind"][0]) if "kind" in data else 0
        if not 0 <= code < len(KIND_CODES):
            return None
        kind = KIND_CODES[code]
        model = nb = None
        if kind in ("logistic", "mean", "blend"):
            weights = data["weights"].astype(np.float32)
            if weights.shape != shape:
                return None
            model = tenant_fit.TenantModel(
                scale=float(data["scale"][0]), offset=float(data["offset"][0]), weights=weights
            )
        if kind in ("nb", "mean", "blend"):
            spam, ham = data["nb_spam"].astype(np.int32), data["nb_ham"].astype(np.int32)
            if spam.shape != shape or ham.shape != shape:
                return None
            totals = data["nb_totals"]
            nb = tenant_fit.NaiveBayes.build(spam, ham, int(totals[0]), int(totals[1]))
        weight = float(data["nb_weight"][0]) if "nb_weight" in data else 0.5
        if kind == "blend" and not 0.0 <= weight <= 1.0:
            return None
        return Fitted(kind=kind, cap=float(data["cap"][0]), model=model, nb=nb, nb_weight=weight)


def _fit_kind(
    kind: str,
    rows: list[tuple[np.ndarray, np.ndarray]],
    tokens: list[np.ndarray],
    base: np.ndarray,
    y: np.ndarray,
    *,
    mature: bool,
    start: Fitted | None,
) -> Fitted:
    weight = tenant_fit.nb_weight(len(y)) if kind == "blend" else 0.5
    if kind == "blend" and weight == 0.0:
        kind = "logistic"  # nothing of the naive Bayes would count: neither fit nor store it
    model = nb = None
    if kind in ("logistic", "mean", "blend"):
        model = tenant_fit.fit(
            tenant_fit.Examples.build(rows, list(base), list(y)),
            fit_global=mature,
            start=start.model if start is not None else None,
        )
    if kind in ("nb", "mean", "blend"):
        nb = tenant_fit.fit_nb(tokens, y)
    return Fitted(
        kind=kind, cap=MATURE_CAP if mature else CAP, model=model, nb=nb, nb_weight=weight
    )


def choose_kind(
    rows: list[tuple[np.ndarray, np.ndarray]],
    tokens: list[np.ndarray],
    base: np.ndarray,
    y: np.ndarray,
    kinds: Sequence[str] = tenant_fit.CV_KINDS,
) -> tuple[str, dict[str, float]]:
    """The kind whose pooled out-of-fold scores rank best (tenant_fit.partial_auc).

    No longer the default (tenant_fit.KINDS is the blend alone): kept for `fit_labels` called
    with several kinds, as scripts/tune_tenant.py does to compare. FOLDS folds, each class
    dealt round-robin in a fixed shuffled order so every fold holds both kinds of label; the
    logistic and the naive Bayes are fitted once per fold and "mean" reuses both. Returns the
    kind and the criterion per kind.
    """
    n = len(y)
    fold = np.empty(n, dtype=np.int64)
    order = np.random.default_rng(0).permutation(n)
    for label in (0, 1):
        members = order[y[order] == label]
        fold[members] = np.arange(len(members)) % tenant_fit.FOLDS
    oof = {k: np.zeros(n) for k in kinds}
    for k_fold in range(tenant_fit.FOLDS):
        train, test = np.flatnonzero(fold != k_fold), np.flatnonzero(fold == k_fold)
        mature = min(int(y[train].sum()), int((1 - y[train]).sum())) >= MATURE
        need = {"logistic", "nb"} if "mean" in kinds else set(kinds)
        fitted = {
            k: _fit_kind(
                k,
                [rows[i] for i in train],
                [tokens[i] for i in train],
                base[train],
                y[train],
                mature=mature,
                start=None,
            )
            for k in need
        }
        for i in test:
            b = float(base[i])
            delta = {}
            if "logistic" in fitted:
                model = fitted["logistic"].model
                assert model is not None
                delta["logistic"] = model.logit(b, *rows[i]) - b
            if "nb" in fitted:
                nb = fitted["nb"].nb
                assert nb is not None
                delta["nb"] = nb.delta(tokens[i], every_term=mature)
            cap = MATURE_CAP if mature else CAP
            delta = {k: max(-cap, min(cap, d)) for k, d in delta.items()}
            if "mean" in kinds:
                delta["mean"] = 0.5 * (delta["logistic"] + delta["nb"])
            for k in kinds:
                oof[k][i] = b + delta[k]
    got = {k: tenant_fit.partial_auc(y, oof[k]) for k in kinds}
    best = kinds[0]
    for k in kinds[1:]:
        if got[k] > got[best]:
            best = k
    return best, got


def fit_labels(
    shipped: SpamModel,
    examples: Sequence[tuple[str, list[np.ndarray], list[str]]],
    *,
    start: Fitted | None = None,
    kinds: Sequence[str] = tenant_fit.KINDS,
) -> tuple[Fitted | None, int, int]:
    """Fit on (label, bucket groups, indicator names) examples; (model, n_spam, n_ham).

    By default (tenant_fit.KINDS) every tenant gets the blend of the logistic and the naive
    Bayes. Given several `kinds`, a tenant with MATURE labels of each gets the one that
    cross-validation on its own labels ranks best (choose_kind); one with fewer, the first.
    Pure CPU work (no database): the worker runs it in a thread; `make eval` calls it too.
    """
    rows, tokens, base_list, labels = [], [], [], []
    for label, groups, indicators in examples[: tenant_fit.MAX_EXAMPLES]:
        idx, values = group_vector(groups[:2])
        rows.append((idx, values))
        tokens.append(groups[2])
        base_list.append(shipped.vector_logit(idx, values) + indicator_logit(indicators))
        labels.append(1 if label == "spam" else 0)
    if not labels:
        return None, 0, 0
    y = np.array(labels, dtype=np.int64)
    base = np.array(base_list, dtype=np.float64)
    n_spam = int(y.sum())
    n_ham = len(y) - n_spam
    mature = min(n_spam, n_ham) >= MATURE
    kind = kinds[0]
    if mature and len(kinds) > 1:
        kind, _ = choose_kind(rows, tokens, base, y, kinds)
    warm = start if start is not None and start.model is not None else None
    fitted = _fit_kind(kind, rows, tokens, base, y, mature=mature, start=warm)
    return fitted, n_spam, n_ham


# tenant id -> ((generation, fitted_at), fitted model or None): each worker process reads a
# tenant's model once per fit, not once per verdict. fitted_at (the fitting transaction's start)
# is part of the key, so a fit whose transaction rolled back never passes for a later one that
# took the same generation number.
Version = tuple[int, datetime | None]
_cache: OrderedDict[uuid.UUID, tuple[Version, Fitted | None]] = OrderedDict()


def _remember(tenant_id: uuid.UUID, version: Version, fitted: Fitted | None) -> None:
    _cache[tenant_id] = (version, fitted)
    _cache.move_to_end(tenant_id)
    while len(_cache) > CACHED_TENANTS:
        _cache.popitem(last=False)


def _due(state: Any) -> bool:
    pending = state.changes - state.fitted_changes
    if pending <= 0:
        return False
    if pending >= max(1, math.ceil(REFIT_SHARE * (state.n_spam + state.n_ham))):
        return True
    return state.fitted_at is None or datetime.now(UTC) - state.fitted_at >= REFIT_AFTER


@dataclass(frozen=True)
class Refit:
    """What one refit request did: `fitted`, `not_due` (nothing changed since the last fit),
    `later` (changes too few and too recent: ask again in `later_s`) or `superseded` (a fit
    that saw as many changes was stored meanwhile)."""

    status: str
    later_s: float | None = None
    generation: int | None = None


def _later_s(state: Any) -> float:
    """How long until a change not yet fitted is REFIT_AFTER old (`_due` said not yet)."""
    if state.fitted_at is None:
        return 0.0
    left = REFIT_AFTER - (datetime.now(UTC) - state.fitted_at)
    return max(1.0, round(left.total_seconds(), 3))


async def refit_when_due(
    db: Database, *, tenant_id: uuid.UUID, shipped: SpamModel | None = None
) -> Refit:
    """Fit the tenant's model on its newest labels and store it, when its labels changed enough.

    What the refit task runs (worker.tasks.classify.refit_tenant), published after a label's
    transaction commits. Two short transactions, and none open in between: the state and the
    labels are read in one, the fit (up to MAX_EXAMPLES rows and MAX_ITER iterations of numpy,
    1-15 s) runs in a thread with no transaction open, and the model is stored in the other,
    only if no fit that saw as many changes was stored meanwhile (so two refits of one tenant
    at once store one model, not an older over a newer one). Verdicts only read what is stored
    (`fitted_for`).
    """
    shipped = shipped or default_model()
    async with db.transaction() as s:
        state = await repo.model_state(s, tenant_id=tenant_id)
        if state is None or state.changes <= state.fitted_changes:
            return Refit("not_due")
        if not _due(state):
            return Refit("later", later_s=_later_s(state))
        changes = state.changes
        rows = await repo.labelled_examples(s, tenant_id=tenant_id, limit=tenant_fit.MAX_EXAMPLES)
    examples = []
    for row in rows:
        groups = unpack_example(row.features)
        if groups is not None:
            examples.append((row.label, groups, list((row.tokens or {}).get("indicators", []))))
    cached = _cache.get(tenant_id)
    start = cached[1] if cached is not None else None
    # Off the event loop, and with no transaction open while it runs.
    fitted, n_spam, n_ham = await asyncio.to_thread(fit_labels, shipped, examples, start=start)
    async with db.transaction() as s:
        version = await repo.save_fit(
            s,
            tenant_id=tenant_id,
            fitted_changes=changes,
            n_spam=n_spam,
            n_ham=n_ham,
            model=fitted.dumps() if fitted is not None else b"",
        )
    if version is None:
        return Refit("superseded")
    _remember(tenant_id, version, fitted)
    return Refit("fitted", generation=version[0])


async def fitted_for(
    session: AsyncSession, *, tenant_id: uuid.UUID, shipped: SpamModel
) -> Fitted | None:
    """The tenant's current model as stored: read only, never fitted here (refit_when_due)."""
    state = await repo.model_state(session, tenant_id=tenant_id)
    if state is None:
        return None
    version: Version = (state.generation, state.fitted_at)
    cached = _cache.get(tenant_id)
    if cached is not None and cached[0] == version:
        _cache.move_to_end(tenant_id)
        return cached[1]
    blob = await repo.model_blob(session, tenant_id=tenant_id, generation=version[0])
    fitted = loads(blob) if blob else None
    _remember(tenant_id, version, fitted)
    return fitted


async def learn(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    message_id: uuid.UUID,
    label: str,
    found: Features,
) -> bool:
    """Record a label (a relabel replaces the old one); False when it was already so."""
    previous = await repo.get_feedback(session, tenant_id=tenant_id, message_id=message_id)
    if previous is not None and previous.label == label and previous.features is not None:
        return False
    await repo.put_feedback(
        session,
        tenant_id=tenant_id,
        user_id=user_id,
        message_id=message_id,
        label=label,
        indicators=found.indicators,
        features=pack_example(found),
    )
    await repo.count_change(session, tenant_id=tenant_id)
    return True

"""`make eval`, part two: does the classifier hold up on mail unlike what it learned from?

Three checks, none of which lets the shipped model see the mails it is scored on:

- **Headerless held-out**: the shipped model on easy-ham-2 + spam-2 reduced to Subject and
  visible body (scripts/classify_data.headerless), as a corpus of "subject + body" records
  arrives.
- **Unseen source**: a model fitted in this run by `make train`'s recipe on easy-ham-1 and
  spam-1 only (mailing lists and 2002 spam), scored headerless on hard-ham-1 (commercial mail,
  newsletters: a kind of ham it never saw) and spam-2 (later spam it never saw).
- **A tenant's 500 labels**: on each of those two sets, 500 mails drawn at random are taught
  as feedback and the rest are scored with the tenant's learning: the code the feedback route
  and the worker run (services.classify.tenant: hashed buckets packed as stored, the same fit
  and the same cap), with the examples held in memory instead of in PostgreSQL.

Also the cost of one verdict (parse, features, score) per message on one core.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.classify_data import headerless, load_folders, quality
from services.classify import features, mail, tenant, tenant_fit
from services.classify.model import SpamModel, probability

N_TAUGHT = 500
N_FEW = 100
UNSEEN_TRAIN = {"easy-ham-1": False, "spam-1": True}
UNSEEN_TEST = {"hard-ham-1": False, "spam-2": True}


def taught_scores(
    model: SpamModel,
    docs: list[mail.MailDoc],
    y: np.ndarray,
    *,
    seed: int = 11,
    n_taught: int = N_TAUGHT,
    kinds: tuple[str, ...] = tenant_fit.KINDS,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Teach n_taught random mails as one tenant's feedback; score the rest with it.

    Also returns the fit's CPU seconds (what the worker spends on a refit of that many labels).
    """
    order = np.random.default_rng(seed).permutation(len(y))
    taught, rest = order[:n_taught], order[n_taught:]
    extracted = [features.extract(d) for d in docs]
    examples = []
    for i in taught:
        groups = tenant.unpack_example(tenant.pack_example(extracted[i]))
        assert groups is not None
        examples.append(("spam" if y[i] else "ham", groups, extracted[i].indicators))
    started = time.process_time()
    fitted, _, _ = tenant.fit_labels(model, examples, kinds=kinds)
    print(f"tenant kind: {fitted.kind if fitted else None}", file=sys.stderr)
    fit_seconds = time.process_time() - started
    assert fitted is not None
    scores = []
    for i in rest:
        base = model.logit(extracted[i])
        adjust = fitted.adjustment(base, tenant.example_groups(extracted[i], model.n_buckets))
        scores.append(probability(base + adjust))
    return np.array(scores), y[rest], fit_seconds


def per_message_ms(model: SpamModel, raws: list[bytes]) -> tuple[float, float, float]:
    """Mean, median and 99th percentile CPU milliseconds from raw bytes to a score, one at a time.

    CPU time of this thread, not wall clock: other work on a shared machine does not count.
    """
    times = []
    for raw in raws:
        started = time.thread_time()
        model.score(features.extract(mail.from_raw(raw)))
        times.append(time.thread_time() - started)
    ms = np.array(times) * 1000
    return float(ms.mean()), float(np.median(ms)), float(np.percentile(ms, 99))


def row(name: str, f: dict[str, float]) -> str:
    return (
        f"| {name} | {f['accuracy']:.4f} | {f['auc']:.4f} | {f['recall_1pct']:.4f} "
        f"| {f['recall_01pct']:.4f} |"
    )


def _taught_rows(
    name: str,
    model: SpamModel,
    docs: list[mail.MailDoc],
    y: np.ndarray,
    summary: dict[str, list[float]],
) -> list[str]:
    """Rows after N_FEW and N_TAUGHT labels (or after half the mails, for a small corpus), by
    the tenant learner before this change (per-tenant CV among tenant_fit.CV_KINDS) and now."""
    rows = []
    sizes = [n for n in (N_FEW, N_TAUGHT) if n <= len(y) // 2] or [len(y) // 2]
    for n in sizes:
        got = []
        for when, kinds in (("before: CV choice", tenant_fit.CV_KINDS), ("now", tenant_fit.KINDS)):
            taught, rest_y, fit_s = taught_scores(model, docs, y, n_taught=n, kinds=kinds)
            print(f"tenant fit on {n} labels ({name}, {when}): {fit_s:.2f} s CPU", file=sys.stderr)
            q = quality(rest_y, taught, model.threshold)
            got.append(q["recall_1pct"])
            rows.append(row(f"{name}, after {n} labels, {when}", q))
        summary.setdefault(f"{name} (labels)", []).append(n)
        summary[name].append(got[1])
        summary.setdefault(f"{name} (before)", []).append(got[0])
    return rows


def generalization_rows(
    shipped: SpamModel,
    held_docs: list[mail.MailDoc],
    held_y: np.ndarray,
    *,
    views: bool = True,
    summary: dict[str, list[float]] | None = None,
) -> list[str]:
    """Markdown rows for the headerless, unseen-source, extra-corpus and tenant checks.

    `summary` receives, per corpus, recall at 1% FPR out of the box and after each label count.
    """
    from scripts import corpus_extra
    from scripts.train_classifier import train_model  # scikit-learn: only where a model is fit

    summary = summary if summary is not None else {}
    rows = []
    bare = [headerless(d) for d in held_docs]
    scores = np.array([shipped.score(features.extract(d)) for d in bare])
    q = quality(held_y, scores, shipped.threshold)
    summary["held-out, headerless"] = [q["recall_1pct"]]
    rows.append(row("held-out, headerless", q))
    rows += _taught_rows("held-out, headerless", shipped, bare, held_y, summary)

    for name in corpus_extra.EXTRA:
        raws, y = corpus_extra.load(name)
        docs = [mail.from_raw(r) for r in raws]
        for label, view in ((name, docs), (f"{name}, headerless", [headerless(d) for d in docs])):
            scores = np.array([shipped.score(features.extract(d)) for d in view])
            q = quality(y, scores, shipped.threshold)
            summary[label] = [q["recall_1pct"]]
            rows.append(row(label, q))
            rows += _taught_rows(label, shipped, view, y, summary)

    train_docs, train_y = load_folders(UNSEEN_TRAIN)
    model = train_model(train_docs, train_y, c=float(shipped.meta.get("C", 16.0)), views=views)
    test_docs, test_y = load_folders(UNSEEN_TEST)
    test_bare = [headerless(d) for d in test_docs]
    scores = np.array([model.score(features.extract(d)) for d in test_bare])
    q = quality(test_y, scores, model.threshold)
    summary["unseen source, headerless"] = [q["recall_1pct"]]
    rows.append(row("unseen source, headerless", q))
    rows += _taught_rows("unseen source, headerless", model, test_bare, test_y, summary)
    return rows


HEADER = "| check | accuracy | AUC | spam recall @1% FPR | @0.1% FPR |\n|---|---|---|---|---|"

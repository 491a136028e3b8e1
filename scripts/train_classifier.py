"""`make train`: fit the spam model on the corpus TRAINING folders only and write the .npz.

The regularisation strength and the decision threshold are chosen by 5-fold cross-validation
inside the training folders; the held-out folders (easy-ham-2, spam-2) are never read here.
Every training mail is seen twice, whole and headerless (scripts/classify_data.py), both views
of one mail always in the same fold, so the text alone carries a verdict and the threshold
fits mail that arrives without its headers.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.classify_data import headerless, load_folders, recall_at_fpr
from scripts.corpus_fetch import TRAIN
from services.classify import features, mail
from services.classify.model import (
    INDICATOR_WEIGHTS,
    MODEL_PATH,
    N_BUCKETS,
    SpamModel,
    feature_vector,
)

C_GRID = (4.0, 16.0, 64.0, 256.0)


def featurize(docs: list[mail.MailDoc]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The model's sparse feature rows, and each mail's indicator prior."""
    rows, cols, vals, priors = [], [], [], []
    for i, doc in enumerate(docs):
        f = features.extract(doc)
        idx, weight = feature_vector(f)
        rows.append(np.full(len(idx), i))
        cols.append(idx)
        vals.append(weight)
        priors.append(sum(INDICATOR_WEIGHTS.get(n, 0.0) for n in f.indicators))
    matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(docs), N_BUCKETS),
    )
    matrix.sum_duplicates()
    return matrix, np.array(priors)


def fit(x: sparse.csr_matrix, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, solver="liblinear", max_iter=1000).fit(x, y)


def train_model(
    docs: list[mail.MailDoc],
    y: np.ndarray,
    *,
    c: float | None = None,
    views: bool = True,
    log: bool = False,
) -> SpamModel:
    """Fit on whole + headerless views; C by CV (unless given), threshold by CV accuracy.

    Rows k*n + i are view k of mail i, and every view of a mail sits in the same fold.
    `views=False` fits whole mails only (the recipe before headerless views, for comparison).
    """
    n = len(y)
    rows = docs + [headerless(d) for d in docs] if views else docs
    k = len(rows) // n
    x, priors = featurize(rows)
    yy = np.tile(y, k)
    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=7).split(np.zeros(n), y))
    best: tuple[float, float, np.ndarray] | None = None
    for cand in (c,) if c is not None else C_GRID:
        cv = np.zeros(k * n)
        for train_idx, test_idx in folds:
            tr = np.concatenate([train_idx + v * n for v in range(k)])
            te = np.concatenate([test_idx + v * n for v in range(k)])
            cv[te] = fit(x[tr], yy[tr], cand).decision_function(x[te])
        cv += priors
        per_view = [recall_at_fpr(y, cv[v * n : (v + 1) * n], 0.01) for v in range(k)]
        score = sum(per_view) + recall_at_fpr(y, cv[:n], 0.001)
        if log:
            print(f"C={cand:<5} cv recall@1%FPR per view (whole, headerless): {per_view}")
        if best is None or score > best[0]:
            best = (score, cand, cv)
    assert best is not None
    _, chosen, cv = best
    # Threshold: the most accurate cut on cross-validated scores of every view.
    candidates = np.unique(cv)
    accuracy = [((cv >= t) == yy).mean() for t in candidates]
    threshold_logit = float(candidates[int(np.argmax(accuracy))])
    model = fit(x, yy, chosen)
    return SpamModel(
        weights=model.coef_[0].astype(np.float32),
        bias=float(model.intercept_[0]),
        threshold=1.0 / (1.0 + math.exp(-threshold_logit)),
        meta={
            "C": chosen,
            "n_train": n,
            "n_buckets": N_BUCKETS,
            "views": "whole + headerless" if views else "whole",
            "features": "crc32-hashed binary tokens, each group scaled by 1/sqrt(its count)",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    args = parser.parse_args()
    started = time.perf_counter()
    docs, y = load_folders(TRAIN)
    print(f"read {len(y)} training mails ({int(y.sum())} spam)")
    model = train_model(docs, y, log=True)
    model.meta["trained_on"] = sorted(TRAIN)
    model.save(args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB), C={model.meta['C']}, "
        f"threshold={model.threshold:.3f}, in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()

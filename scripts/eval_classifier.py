"""`make eval`: postroom's classifier and SpamAssassin on the HELD-OUT folders, same run.

Both are scored on easy-ham-2 + spam-2 only. SpamAssassin (Debian package) runs with local
tests only (no network), its Bayes trained by `sa-learn` on the same training folders in a
throw-away home dir, auto-learning off so it cannot learn from the held-out mails. Both run
single-process pinned to one core; messages/s covers parsing and scoring of the raw mail.
SpamAssassin also scores the held-out mails headerless (Subject + visible body), and then
scripts/eval_generalize.py runs the headerless, unseen-source and 500-label tenant checks.
`--no-spamassassin` prints postroom's figures and those checks only (no SpamAssassin needed).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.classify_data import headerless, quality
from scripts.corpus_fetch import HELD_OUT, TRAIN, folder_paths
from scripts.eval_generalize import (
    HEADER,
    UNSEEN_TEST,
    UNSEEN_TRAIN,
    generalization_rows,
    per_message_ms,
    row,
)
from services.classify import features, mail
from services.classify.model import default_model

SA_CHECK = r"""
use strict; use warnings;
use Time::HiRes qw(time);
use Mail::SpamAssassin;
my $sa = Mail::SpamAssassin->new({
    local_tests_only => 1,
    dont_copy_prefs => 1,
    post_config_text => "use_bayes 1\nbayes_auto_learn 0\nuse_auto_whitelist 0\n",
});
$sa->compile_now(0);
my @files = <STDIN>; chomp @files;
my $t0 = time;
my ($u0, $s0) = times;
for my $f (@files) {
    open(my $fh, '<', $f) or die "$f: $!";
    my $text = do { local $/; <$fh> }; close $fh;
    my $m = $sa->parse($text);
    my $s = $sa->check($m);
    printf "%s\t%.3f\n", $f, $s->get_score;
    $s->finish; $m->finish;
}
my ($u1, $s1) = times;
printf STDERR "elapsed\t%.3f\n", time - $t0;
printf STDERR "cpu\t%.3f\n", ($u1 - $u0) + ($s1 - $s0);
"""


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    ham = np.sort(scores[y == 0])[::-1]
    allowed = math.floor(fpr * len(ham))
    cut = ham[allowed] if allowed < len(ham) else -np.inf
    return float((scores[y == 1] > cut).mean())


def figures(
    y: np.ndarray, scores: np.ndarray, threshold: float, seconds: tuple[float, float]
) -> dict[str, float]:
    return {
        "accuracy": float(((scores >= threshold) == y).mean()),
        "auc": float(roc_auc_score(y, scores)),
        "recall_1pct": recall_at_fpr(y, scores, 0.01),
        "recall_01pct": recall_at_fpr(y, scores, 0.001),
        "msgs_per_s": len(y) / seconds[0],
        "msgs_per_cpu_s": len(y) / seconds[1],
    }


def held_out() -> tuple[list[Path], np.ndarray]:
    paths, labels = [], []
    for folder, is_spam in HELD_OUT.items():
        found = folder_paths(folder)
        paths += found
        labels += [int(is_spam)] * len(found)
    return paths, np.array(labels)


def run_postroom(paths: list[Path]) -> tuple[np.ndarray, tuple[float, float]]:
    model = default_model()
    raws = [p.read_bytes() for p in paths]  # reading files is not the classifier's work
    started, cpu = time.perf_counter(), time.process_time()
    scores = [model.score(features.extract(mail.from_raw(raw))) for raw in raws]
    return np.array(scores), (time.perf_counter() - started, time.process_time() - cpu)


def _sa_check(paths: list[Path], env: dict[str, str]) -> tuple[np.ndarray, tuple[float, float]]:
    done = subprocess.run(
        ["taskset", "-c", "0", "perl", "-e", SA_CHECK],
        input="\n".join(str(p) for p in paths) + "\n",
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    by_file = dict(line.split("\t") for line in done.stdout.splitlines())
    timings = dict(
        line.split("\t") for line in done.stderr.splitlines() if line.startswith(("elapsed", "cpu"))
    )
    seconds = (float(timings["elapsed"]), float(timings["cpu"]))
    return np.array([float(by_file[str(p)]) for p in paths]), seconds


def write_headerless(paths: list[Path], target: Path) -> list[Path]:
    """Each mail as Subject + visible body only (what the headerless checks score), for SA."""
    target.mkdir(parents=True)
    out = []
    for i, path in enumerate(paths):
        bare = headerless(mail.from_raw(path.read_bytes()))
        subject = " ".join(bare.subject.split())
        text = f"Subject: {subject}\nContent-Type: text/plain; charset=utf-8\n\n{bare.text}\n"
        out.append(target / f"{i:05d}.eml")
        out[-1].write_bytes(text.encode("utf-8", errors="replace"))
    return out


def _sa_learn(home: Path, env: dict[str, str], folders: dict[str, bool]) -> None:
    for folder, is_spam in folders.items():
        # Symlinks to the .txt mails only: the corpus folders also hold .json twins.
        target = home / "train" / folder
        target.mkdir(parents=True)
        for path in folder_paths(folder):
            (target / path.name).symlink_to(path)
        started = time.perf_counter()
        subprocess.run(
            ["sa-learn", "--no-sync", "--spam" if is_spam else "--ham", str(target)],
            env=env,
            check=True,
            capture_output=True,
        )
        print(f"sa-learn {folder}: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    subprocess.run(["sa-learn", "--sync"], env=env, check=True, capture_output=True)


def write_raws(raws: list[bytes], target: Path) -> list[Path]:
    target.mkdir(parents=True)
    out = []
    for i, raw in enumerate(raws):
        out.append(target / f"{i:05d}.eml")
        out[-1].write_bytes(raw)
    return out


def run_spamassassin(
    paths: list[Path],
) -> tuple[np.ndarray, tuple[float, float], dict[str, np.ndarray]]:
    """SpamAssassin's scores and time on the held-out mails, and its scores per other check.

    The other checks: the held-out mails headerless, each extra corpus whole and headerless
    (Bayes trained on the training folders, as postroom's shipped model), and the unseen-source
    mails headerless with its Bayes trained on easy-ham-1 + spam-1 only (as the unseen-source
    model is).
    """
    from scripts import corpus_extra

    home = Path(tempfile.mkdtemp(prefix="sa-eval-"))
    env = {**os.environ, "HOME": str(home)}
    other: dict[str, np.ndarray] = {}
    try:
        _sa_learn(home, env, TRAIN)
        scores, seconds = _sa_check(paths, env)
        other["held-out, headerless"], _ = _sa_check(
            write_headerless(paths, home / "headerless"), env
        )
        for name in corpus_extra.EXTRA:
            raws, _ = corpus_extra.load(name)
            whole = write_raws(raws, home / name)
            other[name], _ = _sa_check(whole, env)
            other[f"{name}, headerless"], _ = _sa_check(
                write_headerless(whole, home / f"{name}-headerless"), env
            )
        unseen = Path(tempfile.mkdtemp(prefix="sa-eval-unseen-"))
        env_unseen = {**os.environ, "HOME": str(unseen)}
        try:
            _sa_learn(unseen, env_unseen, UNSEEN_TRAIN)
            test = [p for folder in UNSEEN_TEST for p in folder_paths(folder)]
            other["unseen source, headerless"], _ = _sa_check(
                write_headerless(test, unseen / "headerless"), env_unseen
            )
        finally:
            shutil.rmtree(unseen, ignore_errors=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return scores, seconds, other


def sa_labels() -> dict[str, np.ndarray]:
    """The labels of the checks SpamAssassin scores besides the held-out mails (same order)."""
    from scripts import corpus_extra

    out = {}
    for name in corpus_extra.EXTRA:
        _, y = corpus_extra.load(name)
        out[name] = out[f"{name}, headerless"] = y
    out["unseen source, headerless"] = np.array(
        [int(is_spam) for folder, is_spam in UNSEEN_TEST.items() for _ in folder_paths(folder)]
    )
    return out


def print_summary(summary: dict[str, list[float]], sa: dict[str, float]) -> None:
    """Every corpus's recall at 1% FPR beside SpamAssassin's, against the goals."""
    print("\nRecall at 1% FPR per corpus, beside SpamAssassin's (out of the box):\n")
    print(
        "| corpus | SpamAssassin | postroom out of the box | after few labels, before / now "
        "| after 500 labels, before / now | goals met (SA + 0.1 / 0.9 / 0.95) |"
    )
    print("|---|---|---|---|---|---|")
    for name, got in summary.items():
        if name.endswith(")"):
            continue
        before, sizes = summary[f"{name} (before)"], summary[f"{name} (labels)"]
        theirs = sa.get(name)
        cells = [f"{sizes[i]:.0f}: {before[i]:.4f} / {got[i + 1]:.4f}" for i in range(len(sizes))]
        cells += ["-"] * (2 - len(cells))
        met = ["?" if theirs is None else ("yes" if got[0] >= theirs + 0.1 else "no")]
        met.append("yes" if got[1] >= 0.9 else "no")
        met.append("-" if len(got) < 3 else ("yes" if got[2] >= 0.95 else "no"))
        sa_cell = f"{theirs:.4f}" if theirs is not None else "not run"
        print(f"| {name} | {sa_cell} | {got[0]:.4f} | {' | '.join(cells)} | {' / '.join(met)} |")


def generalization(
    paths: list[Path],
    y: np.ndarray,
    *,
    views: bool = True,
    sa: dict[str, float] | None = None,
) -> None:
    model = default_model()
    raws = [p.read_bytes() for p in paths]
    mean, median, p99 = per_message_ms(model, raws)
    print(
        f"\none verdict from raw bytes, CPU time on one core: mean {mean:.2f} ms, "
        f"median {median:.2f} ms, p99 {p99:.2f} ms"
    )
    print("\nGeneralization (scripts/eval_generalize.py):\n")
    print(HEADER)
    summary: dict[str, list[float]] = {}
    docs = [mail.from_raw(r) for r in raws]
    for line in generalization_rows(model, docs, y, views=views, summary=summary):
        print(line)
    print_summary(summary, sa or {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-spamassassin", action="store_true", help="our figures only")
    parser.add_argument(
        "--whole-only", action="store_true", help="unseen-source model without headerless views"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    paths, y = held_out()
    print(f"held-out: {len(y)} mails ({int(y.sum())} spam)", file=sys.stderr)
    if args.no_spamassassin:
        ours, our_s = run_postroom(paths)
        f = figures(y, ours, default_model().threshold, our_s)
        print(f"postroom held-out: {f}")
        generalization(paths, y, views=not args.whole_only)
        return
    if shutil.which("spamassassin") is None or shutil.which("sa-learn") is None:
        sys.exit("SpamAssassin is needed for the comparison: apt-get install spamassassin.")
    ours, our_s = run_postroom(paths)
    theirs, their_s, their_other = run_spamassassin(paths)
    rows = {
        "postroom": figures(y, ours, default_model().threshold, our_s),
        "SpamAssassin 4 (local rules + Bayes)": figures(y, theirs, 5.0, their_s),
    }
    print(
        "| classifier | accuracy | AUC | spam recall @1% FPR | @0.1% FPR "
        "| messages/s (1 core, wall) | messages per CPU-second |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, f in rows.items():
        print(
            f"| {name} | {f['accuracy']:.4f} | {f['auc']:.4f} | {f['recall_1pct']:.4f} | "
            f"{f['recall_01pct']:.4f} | {f['msgs_per_s']:.0f} | {f['msgs_per_cpu_s']:.0f} |"
        )
    ours, theirs = rows["postroom"], list(rows.values())[1]
    wall = ours["msgs_per_s"] / theirs["msgs_per_s"]
    cpu = ours["msgs_per_cpu_s"] / theirs["msgs_per_cpu_s"]
    print(f"\nspeed ratio postroom / SpamAssassin: {wall:.1f}x wall, {cpu:.1f}x CPU")
    labels = {"held-out, headerless": y, **sa_labels()}
    sa_recall = {}
    print("\nSpamAssassin on the other checks (out of the box):\n")
    print(HEADER)
    for name, scores in their_other.items():
        q = quality(labels[name], scores, 5.0)
        sa_recall[name] = q["recall_1pct"]
        print(row(f"SpamAssassin 4, {name}", q))
    generalization(paths, y, sa=sa_recall)


if __name__ == "__main__":
    main()

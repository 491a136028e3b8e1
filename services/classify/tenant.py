"""A tenant's own learning: token counts from its feedback shift its verdicts, nobody else's.

Counts live in `token_stat (tenant_id, token, spam, ham)`; the adjustment is a Bayesian
log-odds term added to the shipped model's score (Robinson's smoothing), so a few labels move a
verdict without one tenant's mail ever reaching another tenant's scores. A tenant with few
labels, or labels of one kind only, gets the strongest tokens only, capped low (Graham's "A
Plan for Spam"): a tenant that only ever reports spam must not push every mail sharing its
common words over the line. Once it has taught both kinds (MATURE labels of each), every token
of the mail counts, with a higher cap: its own mail then knows more than the shipped model
(`make eval`, "after 500 labels": recall at 1% FPR on mail unlike the training corpus).
"""

from __future__ import annotations

import math
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories import classifier as repo

# Only content tokens are taught: header structure says little about what a tenant disliked.
LEARNED_PREFIXES = ("w:", "s:", "fd:", "u:")
MAX_TOKENS = 400
STRONGEST = 15
# Robinson's prior: a token seen once is pulled half-way to "unknown" (0.5).
STRENGTH = 1.0
# Enough for a few consistent labels to flip a confident verdict of the shipped model.
CAP = 10.0
# The evidence of n labels is scaled by n / (n + SHRINK): three labels count half, fifty
# nearly fully, so a handful of reports cannot flip mail that only shares common words.
SHRINK = 3.0
# Labels of each kind after which every token counts, up to MATURE_CAP.
MATURE = 20
MATURE_CAP = 30.0


def learnable(tokens: list[str]) -> list[str]:
    """The tokens feedback counts, trimmed to the column size and a bounded number per mail."""
    picked = sorted({t[:100] for t in tokens if t.startswith(LEARNED_PREFIXES)})
    return picked[:MAX_TOKENS]


def adjustment_from_counts(counts: dict[str, tuple[int, int]]) -> float:
    """Log-odds to add to the model's score, from this tenant's counts of the mail's tokens."""
    n_spam, n_ham = counts.get(repo.TOTALS, (0, 0))
    if n_spam + n_ham == 0:
        return 0.0
    per_spam, per_ham = 1.0 / max(n_spam, 1), 1.0 / max(n_ham, 1)
    contributions = []
    for token, (spam, ham) in counts.items():
        if token == repo.TOTALS or spam + ham == 0:
            continue
        rate_s, rate_h = spam * per_spam, ham * per_ham
        p = rate_s / (rate_s + rate_h)
        n = spam + ham
        f = (STRENGTH * 0.5 + n * p) / (STRENGTH + n)
        contributions.append(math.log(f / (1.0 - f)))
    trust = (n_spam + n_ham) / (n_spam + n_ham + SHRINK)
    if min(n_spam, n_ham) >= MATURE:
        return max(-MATURE_CAP, min(MATURE_CAP, trust * sum(contributions)))
    contributions.sort(key=abs, reverse=True)
    total = trust * sum(contributions[:STRONGEST])
    return max(-CAP, min(CAP, total))


async def adjustment(session: AsyncSession, *, tenant_id: uuid.UUID, tokens: list[str]) -> float:
    counts = await repo.token_counts(session, tenant_id=tenant_id, tokens=learnable(tokens))
    return adjustment_from_counts(counts)


# Tokens per statement when many mails' counts are read at once (bind-parameter limit).
_READ_CHUNK = 5000


async def adjustments(
    session: AsyncSession, *, tenant_id: uuid.UUID, tokens: list[list[str]]
) -> list[float]:
    """adjustment() for many mails of one tenant, reading the counts of all in one statement
    (per _READ_CHUNK tokens): each mail's figure is what adjustment() gives it alone."""
    wanted = [learnable(t) for t in tokens]
    union = sorted({t for w in wanted for t in w})
    counts: dict[str, tuple[int, int]] = {}
    for i in range(0, max(len(union), 1), _READ_CHUNK):
        counts.update(
            await repo.token_counts(session, tenant_id=tenant_id, tokens=union[i : i + _READ_CHUNK])
        )
    totals = {repo.TOTALS: counts[repo.TOTALS]} if repo.TOTALS in counts else {}
    return [
        adjustment_from_counts({**{t: counts[t] for t in w if t in counts}, **totals})
        for w in wanted
    ]


async def learn(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    message_id: uuid.UUID,
    label: str,
    tokens: list[str],
) -> bool:
    """Record a label; relabelling takes the old counts back first. False when unchanged."""
    taught = learnable(tokens)
    previous = await repo.get_feedback(session, tenant_id=tenant_id, message_id=message_id)
    if previous is not None:
        if previous.label == label:
            return False
        old = list((previous.tokens or {}).get("tokens", []))
        undo = (-1, 0) if previous.label == "spam" else (0, -1)
        await repo.add_token_counts(
            session, tenant_id=tenant_id, tokens=[*old, repo.TOTALS], spam=undo[0], ham=undo[1]
        )
    add = (1, 0) if label == "spam" else (0, 1)
    await repo.add_token_counts(
        session, tenant_id=tenant_id, tokens=[*taught, repo.TOTALS], spam=add[0], ham=add[1]
    )
    await repo.put_feedback(
        session,
        tenant_id=tenant_id,
        user_id=user_id,
        message_id=message_id,
        label=label,
        tokens=taught,
    )
    return True

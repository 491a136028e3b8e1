"""Scores of the delivery-report parser (services/reports) and of flufl.bounce, its peer, on
the labelled bounce corpus (scripts/bounce_corpus.py) and the SpamAssassin ham folders.

Measures (docs/reports.md "Measured"):
- detection: labelled bounces read as a bounce or delay naming at least one labelled address;
- addresses exact: the recipients named are exactly the labelled ones;
- temporary agreement: delay vs bounce against the maintainers' temporary/permanent label;
- DSN agreement: per recipient of an RFC 3464 part, our status equals the Status it declares
  (read here with the standard library, not with our parser);
- hard/soft agreement: our `hard` against a label taken from the enhanced code the bounce
  declares (X.1.1, X.1.2, X.1.6, X.1.10, X.2.1 in a permanent failure: hard; any other code,
  or a temporary failure: soft); bounces declaring no code are left out;
- complaints found: ARF / JMRP samples read as complaints;
- ham flagged: SpamAssassin ham (easy-ham-1, easy-ham-2, hard-ham-1) given any report.
"""

from __future__ import annotations

import email
import logging
import re
import sys
from email import policy
from email.message import Message
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import bounce_corpus
from scripts.corpus import messages as ham_files
from scripts.corpus import raw_message
from services.messages.mime import parse

HAM_FOLDERS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
# Real delivery reports that the SpamAssassin ham folders hold (bounces that reached the
# lists' admin addresses), each read by hand: reading them as reports is right, not a false
# alarm. flufl.bounce finds four of them too.
REPORTS_IN_HAM = {
    "easy-ham-1/01436.dc449ba377210e77d84647619e49c872.txt": "delay",  # "Mail Delayed"
    "easy-ham-1/01507.e06cf7fcfb3a512f43c827529c19a9e6.txt": "bounce",  # "Unable to find user"
    "easy-ham-1/01542.ed72bf2cd81ccd4c076533fb0af004e5.txt": "bounce",  # content refused
    "easy-ham-2/01304.af5f3a2d3a0a19785aeaeeb3d7e36040.txt": "bounce",  # not collected, 30 days
    "easy-ham-2/01311.b6a06b3e24130a32172b4c5225a1d5a6.txt": "delay",  # Postfix warning
}
SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "services" / "report_samples"
COMPLAINTS = ("arf.eml",)
_CODE = re.compile(rb"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]\d)")
# In a plain bounce, an enhanced code counts only right after an SMTP reply code ("550 5.1.1"),
# not any dotted number (a version, an address).
_REPLY_CODE = re.compile(rb"\b[45]\d\d[ -]([245])\.(\d{1,3})\.(\d{1,3})\b")
_HARD_DETAILS = {"1.1", "1.2", "1.6", "1.10", "2.1"}


def _declared(msg: Message) -> list[tuple[set[str], str]]:
    """(the block's addresses: Final- and Original-Recipient, Status) of each recipient block
    of the message's delivery-status part, read with the standard library only."""
    out: list[tuple[set[str], str]] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        for block in payload if isinstance(payload, list) else []:
            m = _CODE.search(str(block.get("Status") or "").encode())
            addrs = {
                str(v).split(";")[-1].strip().strip("<>").lower()
                for v in (block.get("Final-Recipient"), block.get("Original-Recipient"))
                if v and "@" in str(v)
            }
            if m and addrs:
                out.append((addrs, _code(m)))
    return out


def _code(m: re.Match[bytes]) -> str:
    return f"{m.group(1).decode()}.{int(m.group(2))}.{int(m.group(3))}"


def _hard_label(raw: bytes, declared: list[tuple[set[str], str]], temporary: bool) -> bool | None:
    if temporary:
        return False
    codes = [status for _, status in declared]
    if not codes:
        m = _REPLY_CODE.search(raw)
        codes = [_code(m)] if m else []
    if not codes:
        return None
    klass, _, detail = codes[0].partition(".")
    if detail.endswith(".0"):
        return None  # X.0.0, X.1.0...: the code does not say why
    return klass == "5" and detail in _HARD_DETAILS


def _peer(raw: bytes) -> tuple[set[str], set[str]]:
    from flufl.bounce import all_failures

    msg = email.message_from_bytes(raw)
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # flufl.bounce fails on some mail (a non-ASCII From): nothing found
        return set(), set()
    low = lambda xs: {x.decode(errors="replace").lower() for x in xs}  # noqa: E731
    return low(temporary), low(permanent)


def _ratio(hit: int, total: int) -> dict[str, Any]:
    return {"hit": hit, "total": total, "rate": round(hit / total, 3) if total else None}


def score(*, ham: bool = True) -> dict[str, Any]:
    """Both parsers' figures on the corpus (and on the ham folders when `ham`)."""
    # flufl.bounce logs a traceback for every detector that fails on a message.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    ours = dict(detected=0, exact=0, temporary=0, dsn=0, dsn_total=0, hard=0, hard_total=0)
    peer = dict(detected=0, exact=0, temporary=0)
    missed: list[str] = []
    disagreements: list[str] = []
    labelled = [b for b in bounce_corpus.bounces() if b.addresses]
    for b in labelled:
        report = parse(b.raw).report
        got = {r["email"].lower() for r in (report or {}).get("recipients", [])}
        if report and report["kind"] in ("bounce", "delay") and got & b.addresses:
            ours["detected"] += 1
            ours["exact"] += got == b.addresses
            ours["temporary"] += (report["kind"] == "delay") == b.temporary
        else:
            missed.append(b.name)
        msg = email.message_from_bytes(b.raw, policy=policy.compat32)
        declared = _declared(msg)
        by_email = {r["email"].lower(): r for r in (report or {}).get("recipients", [])}
        for addrs, status in declared:
            ours["dsn_total"] += 1
            ours["dsn"] += any(by_email.get(a, {}).get("status") == status for a in addrs)
        label = _hard_label(b.raw, declared, b.temporary)
        if label is not None and report and report["recipients"]:
            ours["hard_total"] += 1
            hard = any(r["hard"] for r in report["recipients"] if r["email"].lower() in b.addresses)
            ours["hard"] += hard == label
            if hard != label:
                disagreements.append(f"{b.name}: hard={hard} label={label}")
        temporary, permanent = _peer(b.raw)
        if (temporary | permanent) & b.addresses:
            peer["detected"] += 1
            peer["exact"] += (temporary | permanent) == b.addresses
            peer["temporary"] += bool(temporary & b.addresses) == b.temporary
    complaints = 0
    for name in COMPLAINTS:
        report = parse((SAMPLES / name).read_bytes()).report
        complaints += bool(report and report["kind"] == "complaint")
    result: dict[str, Any] = {
        "corpus": f"flufl.bounce 6.0.0 test fixtures: {len(labelled)} labelled bounces",
        "postroom": {
            "detection": _ratio(ours["detected"], len(labelled)),
            "addresses_exact": _ratio(ours["exact"], len(labelled)),
            "temporary_agreement": _ratio(ours["temporary"], ours["detected"]),
            "dsn_agreement": _ratio(ours["dsn"], ours["dsn_total"]),
            "hard_soft_agreement": _ratio(ours["hard"], ours["hard_total"]),
            "complaints_found": _ratio(complaints, len(COMPLAINTS)),
            "missed": missed,
            "hard_disagreements": disagreements,
        },
        "flufl.bounce": {
            "detection": _ratio(peer["detected"], len(labelled)),
            "addresses_exact": _ratio(peer["exact"], len(labelled)),
            "temporary_agreement": _ratio(peer["temporary"], peer["detected"]),
            "dsn_agreement": "not given (addresses only)",
            "hard_soft_agreement": "not given (temporary/permanent only)",
            "complaints_found": "not read",
        },
    }
    if ham:
        flagged, peer_flagged, total, known = [], [], 0, 0
        for folder in HAM_FOLDERS:
            for path in ham_files(folder):
                raw = raw_message(path)
                name = f"{folder}/{path.name}"
                report = parse(raw).report
                if name in REPORTS_IN_HAM:
                    known += bool(report and report["kind"] == REPORTS_IN_HAM[name])
                    continue
                total += 1
                if report is not None:
                    flagged.append(f"{name}: {report['kind']}")
                temporary, permanent = _peer(raw)
                if temporary or permanent:
                    peer_flagged.append(name)
        result["postroom"]["ham_flagged"] = {
            "flagged": len(flagged),
            "total": total,
            "which": flagged,
        }
        result["postroom"]["reports_in_ham_found"] = _ratio(known, len(REPORTS_IN_HAM))
        result["flufl.bounce"]["ham_flagged"] = {
            "flagged": len(peer_flagged),
            "total": total,
            "which": peer_flagged,
        }
    return result


def summary(result: dict[str, Any]) -> str:
    lines = [result["corpus"]]
    for who in ("postroom", "flufl.bounce"):
        lines.append(f"{who}:")
        for key, value in result[who].items():
            if key in ("missed", "hard_disagreements"):
                lines.append(f"  {key}: {', '.join(value) or '-'}")
            elif isinstance(value, dict) and "rate" in value:
                lines.append(f"  {key}: {value['rate']} ({value['hit']}/{value['total']})")
            elif isinstance(value, dict):
                lines.append(f"  {key}: {value['flagged']}/{value['total']} {value['which'][:10]}")
            else:
                lines.append(f"  {key}: {value}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(score(ham="--no-ham" not in sys.argv)))

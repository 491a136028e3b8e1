"""Threading of mail by its headers (RFC 5322 Message-ID, In-Reply-To, References).

A message belongs with every message whose id it names and every message that names one of
its ids. The ids a message contributes are its own, its In-Reply-To and (a bounded part of)
its References; two messages sharing any id are in one thread. Which thread an id already
belongs to is stored (thread_ref), so the order of arrival does not matter: a reply stored
before its parent has already recorded the parent's id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

# The text between < and > without spaces or brackets. Linear: the class excludes both
# delimiters, so a failed match never rescans what it read.
_ID = re.compile(r"<([^<>\s]+)>")
_BARE = re.compile(r"[^<>\s]+")
# Hostile mail: no header is read past this, and no id is stored longer than this (longer ids
# are replaced by a digest, which still matches the same id elsewhere).
MAX_HEADER_CHARS = 64 * 1024
MAX_REF_CHARS = 250
# References of a long conversation: the root (first) and the nearest ancestors (last).
MAX_REFERENCES = 50


def _one(token: str) -> str:
    if len(token) <= MAX_REF_CHARS:
        return token
    return "#" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def normalize_ids(value: str | None) -> list[str]:
    """The message ids in a header value, in order; a value without brackets that is one
    word is taken whole (a malformed but still unique Message-ID)."""
    if not value:
        return []
    text = value[:MAX_HEADER_CHARS]
    found = [_one(m.group(1)) for m in _ID.finditer(text)]
    if not found and _BARE.fullmatch(text.strip()):
        found = [_one(text.strip())]
    return found


def _references(values: Any) -> list[str]:
    ids: list[str] = []
    items = values if isinstance(values, list) else [values] if isinstance(values, str) else []
    for item in items[: MAX_REFERENCES * 4]:
        if isinstance(item, str):
            ids.extend(normalize_ids(item))
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    return ids


def message_refs(row: dict[str, Any]) -> list[str]:
    """The ids that tie this message to others: its own first, then the ones it replies to."""
    own = normalize_ids(row.get("message_id_header"))[:1]
    reply = normalize_ids(row.get("in_reply_to"))[:1]
    return list(dict.fromkeys([*own, *reply, *_references(row.get("references"))]))


def link(ref_lists: Sequence[Iterable[str]]) -> list[tuple[list[int], set[str]]]:
    """Group items that share any id: [(item indexes, their ids)], items without ids alone."""
    parent = list(range(len(ref_lists)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, refs in enumerate(ref_lists):
        for ref in refs:
            j = owner.setdefault(ref, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, tuple[list[int], set[str]]] = {}
    for i, refs in enumerate(ref_lists):
        members, ids = groups.setdefault(find(i), ([], set()))
        members.append(i)
        ids.update(refs)
    return list(groups.values())

"""The new text of a reply: the body without quoted history, the `-- ` signature, the "On ...
wrote:" line and the Outlook header block that introduce a quote (docs/messages.md).

One pass over the lines with string tests only (no regular expression that could backtrack):
linear in the body, whatever a sender writes. The first line that starts quoted history ends
the reply; lines quoted with `>` before it (inline answers) are dropped, the text between
them kept. Measured against `mail-parser-reply` on the labelled sample in
tests/services/reply_text_samples.py (docs/messages.md, "Reply text").
"""

from __future__ import annotations

# Only the top of a long body is searched for where the quote starts; past it, the body is
# all reply (the cap also bounds the work per message detail).
MAX_SCAN_CHARS = 200_000
# A header line longer than this is prose, not "On ... wrote:".
MAX_HEADER_CHARS = 400

# "On <date>, <name> wrote:" in the languages mail clients write it in: (first word, what the
# line ends with or holds). Gmail, Apple Mail and Thunderbird differ only in the date format.
_WROTE = (
    ("on ", ("wrote:",)),
    ("am ", ("schrieb:", " schrieb ")),
    ("le ", ("a écrit :", "a écrit:")),
    ("el ", ("escribió:",)),
    ("il ", ("ha scritto:",)),
    ("em ", ("escreveu:",)),
    ("no dia ", ("escreveu:",)),
    ("op ", ("schreef:", " schreef ")),
    ("den ", ("skrev:", " skrev ")),
    ("dne ", ("napsal(a):", "napsal:")),
    ("w dniu ", ("napisał:", "napisała:", "napisał(a):")),
    ("dnia ", ("napisał:", "napisała:", "napisał(a):")),
)
# Lines that end with these introduce a quote whatever they start with (Japanese Gmail writes
# "<date> <name> <address>:", Chinese "... xiedao" with a full-width colon, Russian "pishet:").
_WROTE_ENDINGS = ("写道\uff1a", "写道:", "пишет:", "написал:", "написала:", "написал(а):")  # noqa: RUF001
# "-----Original Message-----" and its translations; Gmail's forwarded-message line.
_SEPARATORS = (
    "original message",
    "ursprüngliche nachricht",
    "message d'origine",
    "mensaje original",
    "messaggio originale",
    "mensagem original",
    "oorspronkelijk bericht",
    "originalmeddelande",
    "forwarded message",
    "weitergeleitete nachricht",
    "message transféré",
    "mensaje reenviado",
)
# Outlook's header block: "From:" (or its translation) and then, within a few lines, "Sent:"
# or "Date:" and "To:" or "Subject:".
_FROM = ("from:", "von:", "de :", "de:", "van:", "da:", "från:", "fra:", "od:", "от:")
_SENT = (
    "sent:",
    "date:",
    "gesendet:",
    "datum:",
    "envoyé :",
    "envoyé:",
    "date :",
    "enviado:",
    "fecha:",
    "verzonden:",
    "inviato:",
    "data:",
    "skickat:",
    "sendt:",
    "wysłano:",
    "отправлено:",
)
_TO = ("to:", "an:", "à :", "à:", "para:", "aan:", "a:", "till:", "til:", "do:", "кому:")
_SUBJECT: tuple[str, ...] = ("subject:", "betreff:", "objet :", "objet:", "asunto:")
_SUBJECT += ("onderwerp:", "oggetto:", "assunto:", "ämne:", "emne:", "temat:", "тема:")
# Phone and app footers that end the new text like a signature.
_FOOTERS = (
    "sent from my ",
    "get outlook for ",
    "von meinem iphone gesendet",
    "von meinem ipad gesendet",
    "envoyé de mon ",
    "enviado desde mi ",
    "inviato da ",
    "verzonden vanaf mijn ",
    "skickat från min ",
)


def _bare(line: str) -> str:
    """The line without quote markers, Markdown bold and surrounding space, lower-cased."""
    return line.strip().lstrip("> \t").replace("*", "").strip().lower()


def _wrote_line(text: str) -> bool:
    if not text or len(text) > MAX_HEADER_CHARS:
        return False
    if text.endswith(_WROTE_ENDINGS):
        return True
    for start, marks in _WROTE:
        if text.startswith(start) and any(
            text.endswith(m) if m.endswith(":") else (m in text and text.endswith(":"))
            for m in marks
        ):
            return True
    # Japanese Gmail: "2024年3月4日(月) 10:12 山田太郎 <taro@example.jp>:".
    return text[:4].isdigit() and "年" in text[:8] and text.endswith(">:")


def _separator(text: str) -> bool:
    if len(text) > MAX_HEADER_CHARS:
        return False
    core = text.strip("-_ ")
    if not core:  # a line of underscores (Outlook) or dashes of 20 and more
        return len(text) >= 20 and text.startswith(("_", "-"))
    return (text.startswith("-") or text.startswith("_")) and core in _SEPARATORS


def _header_block(bare: list[str], i: int) -> bool:
    """An Outlook header block starts at line `i`: From, then Sent/Date and To/Subject."""
    if not bare[i].startswith(_FROM):
        return False
    window = bare[i + 1 : i + 6]
    return any(t.startswith(_SENT) for t in window) and any(
        t.startswith(_TO) or t.startswith(_SUBJECT) for t in window
    )


def _cut(lines: list[str]) -> int:
    """Index of the first line that starts quoted history or a signature; len(lines) if none."""
    bare = [_bare(line) for line in lines]
    for i, line in enumerate(lines):
        text = bare[i]
        if line.rstrip("\n") in ("-- ", "--") or text.startswith(_FOOTERS):
            return i
        if _separator(text) or _header_block(bare, i) or _wrote_line(text):
            return i
        # Gmail wraps a long "On ... <" line: the address and "wrote:" come on the next one.
        if (
            i + 1 < len(lines)
            and len(text) < MAX_HEADER_CHARS
            and not line.lstrip().startswith(">")
            and _wrote_line(f"{text} {bare[i + 1]}")
            and not _wrote_line(bare[i + 1])
        ):
            return i
    return len(lines)


def reply_text(body: str | None) -> str | None:
    """The reply's own text: above the first quote header, separator or signature, without
    lines quoted with `>`; the whole body when it quotes nothing. None without a body. Only
    the first MAX_SCAN_CHARS characters are read."""
    if body is None:
        return None
    lines = body[:MAX_SCAN_CHARS].replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = lines[: _cut(lines)]
    inline = not any(line.strip() and not line.lstrip().startswith(">") for line in head)
    if inline:
        # Inline answers under a quote header at the very top: keep what is not quoted.
        head = lines
    kept: list[str] = []
    for line in head:
        if line.lstrip().startswith(">") or (inline and _wrote_line(_bare(line))):
            continue
        line = line.rstrip()
        if line or (kept and kept[-1]):  # runs of blank lines left by quotes become one
            kept.append(line)
    return "\n".join(kept).strip()

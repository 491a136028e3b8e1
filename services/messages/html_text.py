"""Readable text from an HTML body, for search, snippets and the classifier.

A small tokenizer of our own instead of `html.parser.HTMLParser`: the standard library's parser
(of Python 3.11) is quadratic on unterminated constructs; a body of `<a<a<a...` without a `>`
costs seconds per 100 KB, as every `<` rescans to the end of the input. This one follows the
same rules on well-formed mail (the same block breaks, skipped elements and character
references), and on broken mail does what HTMLParser does at the end of its input (an unclosed
construct is text up to the next `>` or `<`), but remembers each search that failed: once no
`>` follows position p, no construct after p looks for one again. So every character is read a
bounded number of times.
"""

from __future__ import annotations

import html
import re
from re import Pattern

_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"}
_SKIP = {"script", "style", "head", "title"}
# A tag name runs to whitespace, `/`, `>` or NUL (HTML5 tag name state).
_TAG_NAME = re.compile(r"[a-zA-Z][^\t\n\r\f />\x00]*+")
_END_NAME = re.compile(r"\s*+([a-zA-Z][^\t\n\r\f />\x00]*+)")
# The rest of a start tag up to its `>`: quoted values may hold `>`. A quote that does not open
# a value, or never closes, is an ordinary character. Every character but `>` is taken by one
# alternative, so the match fails only when no `>` follows; possessive, so it never backtracks.
_TAG_REST = re.compile(r"""(?:[^>"'=]++|=\s*+(?:"[^"]*+"|'[^']*+')|=|["'])*+>""")
_GT = re.compile(">")
_COMMENT_END = re.compile(r"--\s*+>")
_CDATA_END = re.compile(r"]]>")
# Elements whose content is raw text up to their end tag (HTMLParser's CDATA elements).
_RAW_END = {tag: re.compile(rf"</\s*+{tag}\s*+>", re.IGNORECASE) for tag in ("script", "style")}
_SPACES = re.compile(r"[ \t\r\f\v]+")
# One attempt per newline; `\s*` backtracks only over the whitespace run after that newline.
_BLANK_LINES = re.compile(r"\n\s*\n+")


class _Reader:
    """The markup, what has been collected from it, and the searches known to fail."""

    def __init__(self, markup: str) -> None:
        self.markup = markup
        self.parts: list[str] = []
        self.skip = 0
        # pattern -> a position after which it is known not to match.
        self._absent: dict[Pattern[str], int] = {}

    def search(self, pattern: Pattern[str], pos: int) -> re.Match[str] | None:
        known = self._absent.get(pattern)
        if known is not None and pos >= known:
            return None
        found = pattern.search(self.markup, pos)
        if found is None:
            self._absent[pattern] = pos
        return found

    def data(self, text: str) -> None:
        if text and not self.skip:
            self.parts.append(html.unescape(text))

    def start(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def end(self, tag: str) -> None:
        if tag in _SKIP and self.skip:
            self.skip -= 1
        elif tag in _BLOCK:
            self.parts.append("\n")


def _start_tag(r: _Reader, i: int) -> int | None:
    """`<name ...>` at i: where reading resumes; None when no `>` closes it."""
    if r.search(_GT, i) is None:  # checked first: a tag name may run to the end of the input
        return None
    name = _TAG_NAME.match(r.markup, i + 1)
    assert name is not None  # the caller saw a letter after `<`
    rest = _TAG_REST.match(r.markup, name.end())
    if rest is None:
        return None
    tag = name.group().lower()
    r.start(tag)
    end = rest.end()
    if r.markup[name.end() : end - 1].rstrip().endswith("/"):  # <br/>: a start and an end
        r.end(tag)
        return end
    if tag in _RAW_END:
        close = r.search(_RAW_END[tag], end)
        if close is None:  # as HTMLParser: an unclosed script swallows the rest
            return len(r.markup)
        r.end(tag)
        return close.end()
    return end


def _end_tag(r: _Reader, i: int) -> int | None:
    gt = r.search(_GT, i + 2)
    if gt is None:
        return None
    name = _END_NAME.match(r.markup, i + 2, gt.start())
    if name is not None:
        r.end(name.group(1).lower())
    return gt.end()  # `</>` and `</ ...>` (a bogus comment) say nothing


def _closed_by(r: _Reader, pattern: Pattern[str], pos: int) -> int | None:
    found = r.search(pattern, pos)
    return found.end() if found else None


def _construct(r: _Reader, i: int) -> int | None:
    """One construct starting with `<` at i: where reading resumes, None if it never closes."""
    markup = r.markup
    nxt = markup[i + 1 : i + 2]
    if nxt.isascii() and nxt.isalpha():
        return _start_tag(r, i)
    if nxt == "/":
        return _end_tag(r, i)
    if markup.startswith("<!--", i):
        return _closed_by(r, _COMMENT_END, i + 4)
    if markup[i : i + 9].upper() == "<![CDATA[":
        return _closed_by(r, _CDATA_END, i + 9)
    if nxt in ("!", "?"):  # doctype, conditional comment, bogus comment, processing instruction
        return _closed_by(r, _GT, i + 2)
    r.data("<")
    return i + 1


def _unclosed(r: _Reader, i: int) -> int:
    """An unclosed construct at i is text up to the next `>` (included), else up to the next
    `<` (what HTMLParser does at the end of its input)."""
    gt = r.search(_GT, i + 1)
    if gt is not None:
        end = gt.end()
    else:
        lt = r.markup.find("<", i + 1)
        end = lt if lt >= 0 else len(r.markup)
    r.data(r.markup[i:end])
    return end


def html_to_text(markup: str) -> str:
    """Visible text: block elements become line breaks, script/style/head/title are dropped."""
    r = _Reader(markup)
    i = 0
    n = len(markup)
    while i < n:
        lt = markup.find("<", i)
        if lt < 0:
            r.data(markup[i:])
            break
        r.data(markup[i:lt])
        resume = _construct(r, lt)
        i = resume if resume is not None else _unclosed(r, lt)
    text = _SPACES.sub(" ", "".join(r.parts))
    return _BLANK_LINES.sub("\n\n", text).strip()

"""Print docs/security.md's table of hostile inputs: each shape from tests/hostile/shapes.py, what
postroom answers, and its measured cost at 1x and 8x (best of three, this machine, one run).

    PYTHONPATH=. .venv/bin/python scripts/security_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hostile.cost import FACTOR, growth
from tests.hostile.test_linear_cost import CASES

ANSWERS = {
    "json_escaped_quotes": "400 `bad_request` (not valid JSON)",
    "json_escaped_quotes_after_brackets": "400 `bad_request` (nests deeper than 32)",
    "json_nested": "400 `bad_request` (nests deeper than 32)",
    "json_flat_brackets": "accepted by the depth check; the route validates it",
    "json_many_strings": "400 `bad_request` (nests deeper than 32)",
    "html_lt": "stored; text is the `<` characters",
    "html_lt_a": "stored; an unclosed tag is text (as HTMLParser did)",
    "html_anchor_open": "stored; no link indicator without `</a>`",
    "html_unclosed_comment": "stored; the comment opener is text",
    "html_style_open": "classified; no hidden-text indicator",
    "text_domain_labels": "classified; no domain in the link text",
    "text_long_word": "classified",
    "text_punctuation_runs": "classified",
    "text_url_shapes": "classified; URL-shape tokens for the one link",
    "header_spaces": "stored; the header unfolded and trimmed",
    "header_continuations": "stored; the header unfolded",
    "header_message_id_lt": "stored; `message_id_header` is the value itself",
    "mime_nested": "stored; parts below 20 levels skipped, boundaries past 50 read as text",
    "mime_parts": "stored; every part read",
    "mail_nul_bytes": "stored; NUL characters removed",
    "mail_long_line": "stored",
    "mail_html_lt_a": "stored; text as for `<a` runs above",
}


def main() -> None:
    print(f"| Attack (input shape) | Parser | Answer | n | 1x | {FACTOR}x | ratio |")
    print("|---|---|---|---|---|---|---|")
    for fn, make, n in CASES:
        small, large = growth(fn, make, n)
        doc = (make.__doc__ or make.__name__).strip().splitlines()[0]
        print(
            f"| `{make.__name__}`: {doc} | `{fn.__name__}` | {ANSWERS.get(make.__name__, '')} "
            f"| {n:,} | {small * 1000:.1f} ms | {large * 1000:.1f} ms | {large / small:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

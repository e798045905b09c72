"""docs/troubleshooting.md quotes cwfs's messages: each must still be one cwfs writes, so
that the page cannot drift from the code unnoticed.

The page's convention (an HTML comment at its top says it too): every code span in a
``###`` heading, and on a line starting with "Also:", is a text cwfs writes, quoted
exactly, with ``<...>`` for the parts that vary. A quote is found in the source when
each of its fixed pieces is part of one of cwfs's string literals, or when the whole
quote is what one of its format strings (f-string or ``%``) writes.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "troubleshooting.md"
PLACEHOLDER = re.compile(r"<[^<>]+>")
CODE_SPAN = re.compile(r"`([^`]+)`")
PERCENT = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdrfx]")
COMMAND_PREFIX = re.compile(r"^cwfs(?: \w+)?: ")  # what the command line puts first
SHORTEST = 12  # fixed characters a quote, or a format string, has at least

Template = tuple[str | None, ...]  # fixed text, None where a value goes


def _template(node: ast.JoinedStr | ast.Constant) -> Template:
    if isinstance(node, ast.Constant):
        pieces = PERCENT.split(str(node.value))
        return tuple(part for piece in pieces for part in (None, piece))[1:]
    parts: list[str | None] = []
    for value in node.values:
        parts.append(value.value if isinstance(value, ast.Constant) else None)
    return tuple(parts)


@cache
def source_templates() -> tuple[Template, ...]:
    """Every string literal of the mount's code (not the embedded server's), docstrings
    left out, as a template."""
    found = []
    for path in sorted((ROOT / "cwfs").rglob("*.py")):
        if "server" in path.relative_to(ROOT / "cwfs").parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        inside_fstrings = {
            id(value)
            for node in ast.walk(tree)
            if isinstance(node, ast.JoinedStr)
            for value in node.values
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) or (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings | inside_fstrings
            ):
                found.append(_template(node))
    return tuple(found)


def _fixed(template: Template) -> list[str]:
    return [part for part in template if part]


def _pieces_found(quote: str) -> bool:
    pieces = [piece for piece in PLACEHOLDER.split(quote) if piece]
    texts = [part for template in source_templates() for part in _fixed(template)]
    return all(any(piece in text for text in texts) for piece in pieces)


def _written_by_a_format(quote: str) -> bool:
    example = PLACEHOLDER.sub("X", quote)
    for template in source_templates():
        if None in template and sum(map(len, _fixed(template))) >= SHORTEST:
            pattern = "".join(".+" if part is None else re.escape(part) for part in template)
            if re.fullmatch(pattern, example, re.DOTALL):
                return True
    return False


def missing(quote: str) -> bool:
    """Whether cwfs's source no longer writes ``quote``."""
    quote = COMMAND_PREFIX.sub("", quote)
    return not (_pieces_found(quote) or _written_by_a_format(quote))


def quoted_messages(text: str) -> list[str]:
    """The texts the page quotes as cwfs's: code spans of headings and "Also:" lines."""
    lines = text.splitlines()
    joined = []  # "Also:" paragraphs run over several lines
    for number, line in enumerate(lines):
        if line.startswith("### "):
            joined.append(line)
        elif line.startswith("Also:"):
            end = next((i for i in range(number, len(lines)) if not lines[i].strip()), len(lines))
            joined.append(" ".join(lines[number:end]))
    return [span for line in joined for span in CODE_SPAN.findall(line)]


def test_every_message_the_page_quotes_is_one_cwfs_writes():
    quotes = quoted_messages(PAGE.read_text())
    assert len(quotes) >= 35, quotes  # the convention still holds: the page quotes them so
    short = [q for q in quotes if sum(map(len, PLACEHOLDER.split(q))) < SHORTEST]
    assert short == [], short  # too little to tell one text from another
    assert [quote for quote in quotes if missing(quote)] == []


def test_a_message_cwfs_does_not_write_is_found_missing():
    assert not missing("cwfs: no credentials found: set ACCESS_KEY_ID/SECRET_ACCESS_KEY, ")
    assert missing("cwfs: no credentials were found")
    assert not missing("access denied listing bucket <bucket> at <endpoint> (needs s3:ListBucket)")
    assert missing("access refused listing bucket <bucket> at <endpoint> (needs s3:ListBucket)")
    assert not missing("the data is kept in <file>")
    assert missing("the data is stored in <file>")
    assert missing("changed in the store while open (ETag was <etag>): reopen it")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def test_the_links_within_the_page_lead_to_its_headings():
    text = PAGE.read_text()
    anchors = {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links and [link for link in links if link not in anchors] == []

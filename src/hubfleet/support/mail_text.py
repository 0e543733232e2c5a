"""The text of a received mail: HTML turned into plain text (never rendered) and the quoted reply cut off.

A reply carries the whole conversation below the new text ("On ... wrote:" and `>` lines, Outlook's
"From: / Sent:" block); the ticket already has that, so only what is new is kept. When cutting would
leave nothing (someone wrote below the quote), the whole text is kept: nothing the requester wrote is lost.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = {
    "p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
    "section", "article", "header", "footer", "hr", "dt", "dd", "address",
}  # fmt: skip
_HIDDEN = {"script", "style", "head", "title", "template", "noscript", "blockquote"}
"""Never text: code, styles, and (in a reply) the quoted earlier mail."""


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
            return
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
            return
        if tag == "a" and self.links:
            href = self.links.pop()
            if href and href.startswith(("http://", "https://", "mailto:")) and not self.hidden:
                self.parts.append(f" ({href.removeprefix('mailto:')})")
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain text of an HTML mail body: tags dropped, entities decoded, blocks on lines of their own,
    links written out; scripts, styles and quoted earlier mail (<blockquote>) left out."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_WROTE = re.compile(
    r"^\s*(On\b.{0,300}\bwrote|Am\b.{0,300}\bschrieb.{0,100}"
    r"|Le\b.{0,300}\ba écrit\s*|El\b.{0,300}\bescribió):\s*$",
    re.IGNORECASE,
)
"""Gmail's, Apple Mail's, Thunderbird's line above a quote (the quote follows in `>` lines)."""
_SEPARATOR = re.compile(
    r"^\s*(-{2,}\s*(Original Message|Ursprüngliche Nachricht|Message d'origine)\s*-{2,}|_{20,})\s*$",
    re.IGNORECASE,
)
_OUTLOOK_FIELDS = ("sent:", "date:", "to:", "subject:", "gesendet:", "an:", "betreff:", "envoyé :")


def _cut_at(lines: list[str]) -> int | None:
    """The line where the quoted earlier mail begins, if a reply header says so."""
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            return i
        for header_end in (i, i + 1):  # the "On ... wrote:" line is often wrapped in two
            header = " ".join(lines[i : header_end + 1])
            after = next((f for f in lines[header_end + 1 :] if f.strip()), "")
            if line.strip() and _WROTE.match(header) and after.lstrip().startswith(">"):
                return i
        if re.match(r"^\s*(From|Von|De)\s*:", line, re.IGNORECASE):
            following = [f.strip().lower() for f in lines[i + 1 : i + 5]]
            if sum(1 for f in following if f.startswith(_OUTLOOK_FIELDS)) >= 2:
                return i
    return None


def trim_quoted(text: str) -> str:
    """`text` without the quoted earlier mail of a reply; the whole text if nothing new would remain."""
    lines = text.replace("\r\n", "\n").split("\n")
    cut = _cut_at(lines)
    kept = lines[:cut] if cut is not None else lines
    while kept and (not kept[-1].strip() or kept[-1].lstrip().startswith(">")):
        kept.pop()
    trimmed = "\n".join(kept).strip()
    return trimmed or text.strip()

"""``report.html``: the report as one self-contained page (inline SVG, no network).

The markdown report is converted with Python-Markdown (tables extension); every picture it
links as ``X.png`` whose ``X.svg`` exists is replaced by the SVG itself, so the page can be
mailed or archived alone and still shows every figure, scalable.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import markdown

IMG = re.compile(r'(?:<p>)?<img alt="(?P<alt>[^"]*)" src="(?P<src>[^"]+)"\s*/?>(?:</p>)?')
SVG_START = re.compile(r"<svg[\s>]")
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _inline_svg(match: re.Match[str], base: Path) -> str:
    svg_path = (base / match["src"]).with_suffix(".svg")
    if not svg_path.exists():
        return match.group(0)
    text = svg_path.read_text()
    start = SVG_START.search(text)  # drop the XML prolog and doctype: invalid inside HTML
    body = text[start.start() :] if start else text
    return f"<figure>{body}<figcaption>{html.escape(match['alt'])}</figcaption></figure>"


def report_html(markdown_text: str, base: Path, title: str) -> str:
    """The page for ``markdown_text`` whose picture links are relative to ``base``."""
    body = markdown.markdown(markdown_text, extensions=["tables"])
    body = IMG.sub(lambda m: _inline_svg(m, base), body)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )

"""Render report sections to ``report.md`` and a self-contained ``report.html``.

Why a section model: the report is assembled from independent parts (the answer,
statistics, figures, the circuits, failures, the sweep's metadata), each a
``groktransfer.analysis.section.Section`` that returns plain data (text, tables,
figures), so each output format is rendered in one place: markdown links PNGs by
relative path; HTML embeds them as base64 so the file can be mailed or archived
alone. Tables and text go through ``groktransfer.render``.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from groktransfer.render import markdown_table, markdown_to_html


@dataclass
class ReportTable:
    """A table with a caption; cells are shown as given (format numbers beforehand)."""

    frame: pd.DataFrame
    caption: str = ""


@dataclass
class ReportFigure:
    """A PNG on disk with a caption."""

    path: Path
    caption: str = ""


@dataclass
class ReportSection:
    """One titled section. ``text`` is markdown: paragraphs, ``- `` bullets, `code`, **bold**.

    ``html`` (optional) replaces the rendered ``text`` in the HTML output, for
    sections that need richer markup than the light markdown supports.
    """

    title: str
    text: str = ""
    tables: list[ReportTable] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    html: str | None = None


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f4f8; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
section.answer { background: #f4f8fc; border: 1px solid #c9dcef; border-radius: 6px; padding: .2em 1.2em .6em; }
section.answer h2 { margin-top: .6em; }
nav.toc { font-size: 0.9em; margin: 1em 0; color: #555; }
nav.toc a { margin-right: .8em; white-space: nowrap; }
"""


# --------------------------------------------------------------------------- markdown


def section_markdown(section: ReportSection, base_dir: Path) -> str:
    """Markdown of one section; figure links are relative to ``base_dir`` (the report's dir)."""
    parts = [f"## {section.title}"]
    if section.text:
        parts.append(section.text.strip())
    for t in section.tables:
        parts.append((f"**{t.caption}**\n\n" if t.caption else "") + markdown_table(t.frame))
    for f in section.figures:
        rel = Path(os.path.relpath(f.path, base_dir)).as_posix()
        parts.append(f"![{f.caption or f.path.stem}]({rel})" + (f"\n\n*{f.caption}*" if f.caption else ""))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- html


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def slug(title: str, taken: set[str] | None = None) -> str:
    """An HTML id for a section title, unique within ``taken`` (which it updates)."""
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    name, i = base, 2
    while taken is not None and name in taken:
        name, i = f"{base}-{i}", i + 1
    if taken is not None:
        taken.add(name)
    return name


def section_html(section: ReportSection, anchor: str | None = None) -> str:
    """HTML of one section, figures embedded as base64 PNG; ``anchor`` is the heading's id."""
    ident = f' id="{html.escape(anchor)}"' if anchor else ""
    parts = [f"<h2{ident}>{html.escape(section.title)}</h2>"]
    if section.html is not None:
        parts.append(section.html)
    elif section.text:
        parts.append(markdown_to_html(section.text))
    for t in section.tables:
        if t.frame.empty:
            parts.append(f"<p><em>{html.escape(t.caption)}: none</em></p>")
            continue
        table = t.frame.to_html(index=False, na_rep="–", border=0, escape=True)
        if t.caption:
            table = table.replace(">", f"><caption>{html.escape(t.caption)}</caption>", 1)
        parts.append(table)
    for f in section.figures:
        cap = f"<figcaption>{html.escape(f.caption)}</figcaption>" if f.caption else ""
        parts.append(f"<figure>{_img_tag(f.path, f.caption or f.path.stem)}{cap}</figure>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- assembly


def build_report(title: str, sections: Sequence[ReportSection], out_dir: Path, intro: str = "") -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` to ``out_dir``; return their paths.

    The first section opens the report (the answer): in HTML it is boxed and followed by a
    one-line table of contents linking every section; every heading has an id.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}"]
    if intro:
        md.append(intro.strip())
    md += [section_markdown(s, out_dir) for s in sections]
    md_path = out_dir / "report.md"
    md_path.write_text("\n\n".join(md) + "\n", encoding="utf-8")

    taken: set[str] = set()
    anchors = [slug(s.title, taken) for s in sections]
    rendered = [section_html(s, a) for s, a in zip(sections, anchors)]
    links = " ".join(f'<a href="#{a}">{html.escape(s.title)}</a>' for s, a in zip(sections, anchors))
    body = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        body.append(markdown_to_html(intro))
    if rendered:
        body.append(f'<section class="answer">\n{rendered[0]}\n</section>')
        body.append(f'<nav class="toc">Contents: {links}</nav>')
    body += rendered[1:]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    html_path = out_dir / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path

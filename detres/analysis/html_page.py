"""One self-contained HTML page (inline CSS and a few lines of inline JS; no CDN, no web font) and the atomic
writing of a page's folder, shared by the evaluation report and the dataset browser."""

from __future__ import annotations

import html
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from detres.errors import UserError

CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; cursor: pointer; user-select: none; } td:first-child, th:first-child { text-align: left; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; } .figs figure { margin: 0; }
.figs img { max-width: 560px; width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; } .note { color: #555; font-size: .9em; }
.pair img { max-width: 100%; border: 1px solid #ddd; } .legend span { padding: 0 .5em; margin-right: .5em; }
"""

# Click a column header to sort by it (numbers numerically, NaN and text last); click again to reverse.
SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  var col = th.cellIndex;
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = !th.classList.contains('sorted-asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
    th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
    var key = function (row) { var t = row.cells[col].textContent, v = parseFloat(t); return isNaN(v) ? t : v; };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), nx = typeof x === 'number', ny = typeof y === 'number';
      var c = nx && ny ? x - y : nx ? -1 : ny ? 1 : String(x).localeCompare(String(y));
      return asc ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def fmt(value: object, digits: int = 1) -> str:
    """A table cell: floats rounded, NaN as 'n/a'."""
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return esc(value)


def table(headers: list[str], rows: list[list[object]], *, table_id: str, digits: int = 1) -> str:
    """A sortable table; the first column is the row's name."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v, digits)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="sortable" id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figures(items: list[tuple[str, str]]) -> str:
    """(relative PNG path, caption) pairs as a wrapping row of figures, each linking to its SVG."""
    cells = []
    for png, caption in items:
        svg = png[:-4] + ".svg" if png.endswith(".png") else png
        cells.append(f'<figure><a href="{esc(svg)}"><img src="{esc(png)}" alt="{esc(caption)}"></a>'
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    return '<div class="figs">' + "".join(cells) + "</div>"


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole page: a title, then (anchor, heading, inner html) sections in order, with a contents line."""
    toc = " · ".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{inner}</section>' for a, h, inner in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>{toc}</p>{body}"
            f"<script>{SORT_JS}</script></body></html>")


def write_site(out_dir: str | Path, build: Callable[[Path], str]) -> Path:
    """Build a page's folder atomically: `build(tmp_dir)` writes its files and returns index.html's text, which is
    written last; the folder then replaces `out_dir` by rename, so a reader never sees half a report. An existing
    `out_dir` is replaced only if it is empty or holds an index.html (a previous page), never another folder."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "index.html").exists())):
        raise UserError(f"{out} exists and is not a report folder (no index.html); choose a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        text = build(tmp)
        (tmp / "index.html").write_text(text, encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

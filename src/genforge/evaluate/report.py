"""One self-contained HTML page that puts runs side by side: metrics tables, an overview, a card per run
(sample grid or generated texts, and the figures its evaluation drew) and training curves.

Everything is inline: images are base64 ``data:`` URIs, CSS sits in a ``<style>`` element, there is no
JavaScript, and a Content-Security-Policy forbids loading anything else, so the page can be mailed or
archived as one file and opened offline. Every user-supplied string goes through :func:`html.escape`.

    from genforge.evaluate.report import ReportRun, MetricsTable, write_report
    write_report("report.html", runs, tables, subtitle="4 runs on mnist / pycode")
"""

from __future__ import annotations

import base64
import html
import math
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["MetricsTable", "ReportRun", "render_report", "write_report"]

TEXT_SAMPLES_SHOWN = 4
TEXT_SAMPLE_MAX_CHARS = 1500
_FAMILY_COLORS = {"diffusion": "#7b3fa0", "gan": "#c0392b", "vae": "#1f7a4d", "transformer": "#1f5fa8"}


@dataclass
class ReportRun:
    name: str  # run directory name, e.g. "diffusion"
    family: str  # diffusion | gan | vae | transformer
    data: str  # data source, e.g. "mnist"
    modality: str  # the modality's name: "image", "text", "codes", ...
    parameters: int
    steps: int
    train_items_per_s: float | None  # training speed
    sample_items_per_s: float | None  # sampling speed
    unit: str  # what training speed counts: "img", "tok", ...
    sample_unit: str | None = None  # what sampling speed counts, when not ``unit`` (a codes prior makes images)
    grid_png: bytes | None = None  # image runs: PNG bytes of a sample grid
    audio_wav: bytes | None = None  # runs one can hear (music): WAV bytes of a sample, played in the card
    text_samples: list[str] = field(default_factory=list)  # text runs: a few generated texts
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # {"main/loss": [(25, 0.9), ...]}
    # (caption, PNG bytes) drawn by the run's evaluation (a table run's column histograms, ...), shown in its card
    figures: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class MetricsTable:
    title: str
    columns: list[str]  # metric keys in display order
    rows: list[tuple[str, dict[str, float | None]]]  # (row label, metric -> value); missing -> "—"
    notes: list[str] = field(default_factory=list)  # lines shown under the table
    lower_is_better: set[str] = field(default_factory=set)  # others are higher-is-better
    reference_rows: set[str] = field(default_factory=set)  # italic, never highlighted as best


# ----------------------------------------------------------------------------------------------- formatting

_DASH = "\u2014"


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def format_number(v: float | None) -> str:
    """3 significant digits; thousands separators from 1,000 up; "—" for None, "n/a" for NaN/inf."""
    if v is None:
        return _DASH
    if not _finite(v):
        return "n/a"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a == 0:
        return "0"
    if a < 1e-3:
        return f"{v:.2e}"
    s = f"{v:.3g}"
    return s if "e" not in s else f"{v:,.0f}"


def format_parameters(n: int | None) -> str:
    if n is None or not _finite(n):
        return _DASH
    a = abs(n)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale:
            return f"{n / scale:.3g} {suffix}"
    return f"{int(n)}"


def format_speed(v: float | None, unit: str) -> str:
    if v is None or not _finite(v):
        return _DASH
    return f"{format_number(v)} {unit}/s"


def _steps(n: int | None) -> str:
    return _DASH if n is None or not _finite(n) else f"{int(n):,}"


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when the bytes are not a PNG."""
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    return None


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, cls: str, alt: str) -> str:
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return f'<img class="{cls}" alt="{_esc(alt)}"{dims} src="{_data_uri(data)}">'


# ---------------------------------------------------------------------------------------------- sections


def _best_rows(table: MetricsTable) -> dict[str, set[int]]:
    """Column -> indices of the rows holding the best value (ties all count). Reference rows never win,
    and a column needs at least two candidate values for a "best" to mean anything."""
    best: dict[str, set[int]] = {}
    for col in table.columns:
        cands = [
            (i, vals.get(col))
            for i, (label, vals) in enumerate(table.rows)
            if label not in table.reference_rows and _finite(vals.get(col))
        ]
        if len(cands) < 2:
            continue
        pick = min if col in table.lower_is_better else max
        target = pick(v for _, v in cands)
        best[col] = {i for i, v in cands if v == target}
    return best


def _metrics_table(table: MetricsTable) -> str:
    best = _best_rows(table)
    head = "".join(
        f'<th scope="col">{_esc(c)} <span class="dir" title="{"lower" if c in table.lower_is_better else "higher"}'
        f' is better">{"↓" if c in table.lower_is_better else "↑"}</span></th>'
        for c in table.columns
    )
    body = []
    for i, (label, vals) in enumerate(table.rows):
        ref = label in table.reference_rows
        cells = []
        for c in table.columns:
            text = _esc(format_number(vals.get(c)))
            if i in best.get(c, ()):
                cells.append(f'<td class="num best"><b>{text}</b></td>')
            else:
                cells.append(f'<td class="num">{text}</td>')
        label_html = f"<em>{_esc(label)}</em>" if ref else _esc(label)
        cls = ' class="ref"' if ref else ""
        body.append(f'<tr{cls}><th scope="row">{label_html}</th>{"".join(cells)}</tr>')
    notes = "".join(f"<li>{_esc(n)}</li>" for n in table.notes)
    return (
        '<div class="table-block">'
        f"<h3>{_esc(table.title)}</h3>"
        '<div class="scroll"><table class="metrics">'
        f'<thead><tr><th scope="col">run</th>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>'
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + "</div>"
    )


def _family_badge(family: str) -> str:
    color = _FAMILY_COLORS.get(family, "#555")
    return f'<span class="badge" style="background:{color}">{_esc(family)}</span>'


def _overview(runs: list[ReportRun]) -> str:
    rows = []
    for r in runs:
        rows.append(
            "<tr>"
            f'<th scope="row">{_esc(r.name)}</th>'
            f"<td>{_family_badge(r.family)}</td>"
            f"<td>{_esc(r.data)}</td>"
            f'<td class="num">{_esc(format_parameters(r.parameters))}</td>'
            f'<td class="num">{_esc(_steps(r.steps))}</td>'
            f'<td class="num">{_esc(format_speed(r.train_items_per_s, r.unit))}</td>'
            f'<td class="num">{_esc(format_speed(r.sample_items_per_s, r.sample_unit or r.unit))}</td>'
            "</tr>"
        )
    return (
        '<div class="scroll"><table class="overview"><thead><tr>'
        '<th scope="col">run</th><th scope="col">family</th><th scope="col">data</th>'
        '<th scope="col">parameters</th><th scope="col">steps</th>'
        '<th scope="col">train speed</th><th scope="col">sampling speed</th>'
        f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _card(r: ReportRun) -> str:
    facts = (
        f"<dl>"
        f"<dt>data</dt><dd>{_esc(r.data)} ({_esc(r.modality)})</dd>"
        f"<dt>parameters</dt><dd>{_esc(format_parameters(r.parameters))}</dd>"
        f"<dt>steps</dt><dd>{_esc(_steps(r.steps))}</dd>"
        f"<dt>train</dt><dd>{_esc(format_speed(r.train_items_per_s, r.unit))}</dd>"
        f"<dt>sampling</dt><dd>{_esc(format_speed(r.sample_items_per_s, r.sample_unit or r.unit))}</dd>"
        f"</dl>"
    )
    if r.grid_png:
        body = f'<figure>{_img(r.grid_png, "grid", f"samples: {r.name}")}</figure>'
        if r.audio_wav:
            body += (f'<figure><audio controls preload="none" src="{_data_uri(r.audio_wav, "audio/wav")}"></audio>'
                     f'<figcaption>listen: the latest training samples</figcaption></figure>')
    elif r.text_samples:
        parts = []
        for t in r.text_samples[:TEXT_SAMPLES_SHOWN]:
            t = str(t)
            if len(t) > TEXT_SAMPLE_MAX_CHARS:
                t = t[:TEXT_SAMPLE_MAX_CHARS] + "\u2026"
            parts.append(f'<pre class="sample">{_esc(t)}</pre>')
        more = len(r.text_samples) - TEXT_SAMPLES_SHOWN
        if more > 0:
            parts.append(f'<p class="muted">({more} more not shown)</p>')
        body = "".join(parts)
    else:
        body = '<p class="muted">no samples</p>'
    figures = "".join(
        f'<figure>{_img(png, "figure", caption)}<figcaption>{_esc(caption)}</figcaption></figure>'
        for caption, png in r.figures
    )
    # a card with figures spans the row: small multiples and heat maps need the width to be read
    cls = "card wide" if figures else "card"
    return (
        f'<article class="{cls}">'
        f"<header><h3>{_esc(r.name)}</h3>{_family_badge(r.family)}</header>"
        f"{facts}{body}"
        + (f'<div class="figures">{figures}</div>' if figures else "")
        + "</article>"
    )


# ------------------------------------------------------------------------------------------------ curves


def _clean(points: list[tuple[int, float]]) -> tuple[list[float], list[float]]:
    pts = sorted((float(s), float(v)) for s, v in points if _finite(s) and _finite(v))
    return [p[0] for p in pts], [p[1] for p in pts]


def _maybe_log(ax, ys: list[float]) -> None:
    if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
        ax.set_yscale("log")


def _curve_figures(runs: list[ReportRun]) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes): one figure with a small subplot per run for its "*/loss" curves, then one
    shared figure per other curve name ("eval/*" first) comparing the runs that have it."""
    with_curves = [r for r in runs if any(_clean(p)[0] for p in r.curves.values())]
    if not with_curves:
        return []
    from genforge.evaluate.figures import png_bytes as save
    from genforge.evaluate.figures import pyplot

    plt = pyplot()
    colors = plt.get_cmap("tab10").colors
    run_color = {id(r): colors[i % len(colors)] for i, r in enumerate(runs)}
    figures: list[tuple[str, bytes]] = []

    style = {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.3}
    with plt.rc_context(style):
        loss_runs = [r for r in with_curves if any(k.endswith("/loss") and _clean(v)[0] for k, v in r.curves.items())]
        if loss_runs:
            ncols = min(len(loss_runs), 4)
            nrows = math.ceil(len(loss_runs) / ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols, 2.2 * nrows), squeeze=False, layout="constrained")
            for ax in axes.flat[len(loss_runs):]:
                ax.set_visible(False)
            for ax, r in zip(axes.flat, loss_runs):
                ys_all: list[float] = []
                for k in sorted(k for k in r.curves if k.endswith("/loss")):
                    xs, ys = _clean(r.curves[k])
                    if xs:
                        ax.plot(xs, ys, linewidth=1.1, label=k, marker="." if len(xs) < 3 else None)
                        ys_all += ys
                _maybe_log(ax, ys_all)
                ax.set_title(f"{r.name} ({r.family})")
                ax.set_xlabel("step")
                ax.legend(loc="best", frameon=False)
            figures.append(("training losses, one panel per run", save(fig)))

        names = sorted({k for r in with_curves for k in r.curves if not k.endswith("/loss")},
                       key=lambda k: (not k.startswith("eval/"), k))
        for name in names:
            have = [r for r in with_curves if _clean(r.curves.get(name, []))[0]]
            if not have:
                continue
            fig, ax = plt.subplots(figsize=(4.6, 2.8), layout="constrained")
            ys_all = []
            for r in have:
                xs, ys = _clean(r.curves[name])
                ax.plot(xs, ys, linewidth=1.3, color=run_color[id(r)], label=r.name,
                        marker="." if len(xs) < 12 else None)
                ys_all += ys
            _maybe_log(ax, ys_all)
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.legend(loc="best", frameon=False)
            figures.append((f"{name} across runs", save(fig)))
    return figures


# ------------------------------------------------------------------------------------------------- page

_CSS = """
:root { color-scheme: light; --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 16px 48px; }
header.page h1 { margin: 0 0 4px; font-size: 26px; }
header.page p { margin: 2px 0; color: var(--muted); }
h2 { font-size: 18px; margin: 32px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 8px; }
.muted { color: var(--muted); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
thead th { background: #eef1f5; font-weight: 600; }
tbody th { font-weight: 500; }
td.num, thead th:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
table.overview thead th:nth-child(2), table.overview thead th:nth-child(3) { text-align: left; }
td.best b { font-weight: 700; }
tr.ref th, tr.ref td { font-style: italic; color: #475467; background: #fafafa; }
.dir { color: var(--muted); font-weight: 400; }
.table-block { margin-bottom: 22px; }
ul.notes { margin: 6px 0 0; padding-left: 18px; color: var(--muted); font-size: 12.5px; }
.badge { display: inline-block; color: #fff; border-radius: 10px; padding: 0 8px; font-size: 12px; line-height: 19px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 16px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px; min-width: 0; }
.card.wide { grid-column: 1 / -1; }
.card header { display: flex; align-items: center; justify-content: space-between; gap: 8px; margin-bottom: 6px; }
.card header h3 { margin: 0; overflow-wrap: anywhere; }
.card dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 10px; margin: 0 0 10px; font-size: 12.5px; }
.card dt { color: var(--muted); }
.card dd { margin: 0; }
figure { margin: 0; }
audio { display: block; width: 100%; margin-top: 6px; }
img.grid { display: block; width: 100%; max-width: 340px; height: auto; margin: 0 auto;
  image-rendering: pixelated; border: 1px solid var(--line); background: #000; }
pre.sample { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 220px; overflow-y: auto; margin: 0 0 8px;
  padding: 8px; background: #f8f9fb; border: 1px solid var(--line); border-radius: 4px; font-size: 12px; }
.curves { display: flex; flex-wrap: wrap; gap: 16px; }
.curves figure { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px; max-width: 100%; }
.curves figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
img.curve { display: block; max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 10px; align-items: flex-start; }
.figures figure { max-width: 100%; }
.figures figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; max-width: 720px; }
img.figure { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""

_CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"


def render_report(
    runs: list[ReportRun], tables: list[MetricsTable], title: str = "genforge report", subtitle: str | None = None
) -> str:
    """The whole HTML document as a string: self-contained, no external references, no JavaScript."""
    now = datetime.now().astimezone()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="genforge">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>",
        '<header class="page">',
        f"<h1>{_esc(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="subtitle">{_esc(subtitle)}</p>')
    parts.append(f'<p class="generated">generated <time datetime="{now.isoformat(timespec="seconds")}">{_esc(stamp)}</time></p>')
    parts.append("</header>")

    parts.append('<section id="metrics"><h2>Metrics</h2>')
    if tables:
        parts.extend(_metrics_table(t) for t in tables)
    else:
        parts.append('<p class="muted">no metrics computed</p>')
    parts.append("</section>")

    parts.append('<section id="overview"><h2>Runs</h2>')
    parts.append(_overview(runs) if runs else '<p class="muted">no runs</p>')
    parts.append("</section>")

    if runs:
        parts.append('<section id="samples"><h2>Samples</h2><div class="cards">')
        parts.extend(_card(r) for r in runs)
        parts.append("</div></section>")

    figures = _curve_figures(runs)
    if figures:
        parts.append('<section id="curves"><h2>Training curves</h2><div class="curves">')
        for caption, png in figures:
            parts.append(f"<figure>{_img(png, 'curve', caption)}<figcaption>{_esc(caption)}</figcaption></figure>")
        parts.append("</div></section>")

    parts.append(f'<footer>genforge report &middot; {len(runs)} run{"s" if len(runs) != 1 else ""}</footer>')
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_report(
    path: str | os.PathLike,
    runs: list[ReportRun],
    tables: list[MetricsTable],
    title: str = "genforge report",
    subtitle: str | None = None,
) -> Path:
    """Render and write the page atomically; returns the path written."""
    from genforge.io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, render_report(runs, tables, title=title, subtitle=subtitle))
    return path

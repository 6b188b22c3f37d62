"""The comparison report: one self-contained HTML page (genforge.evaluate.report).

The browser test opens the written page in Debian's chromium through playwright (never `playwright install`)
and saves a full-page screenshot to tests/artifacts/report.png (or $GENFORGE_TEST_ARTIFACTS). Without
chromium it FAILS, so CI cannot skip it silently; set GENFORGE_SKIP_BROWSER=1 to skip it on purpose.
"""

from __future__ import annotations

import base64
import html
import io
from html.parser import HTMLParser
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from browsertools import BROWSER_ARGS, artifacts_dir, chromium
from genforge.evaluate.report import (
    MetricsTable,
    ReportRun,
    render_report,
    write_report,
)

WEIRD_NAME = "v&<ae>"
SCRIPT = "<script>alert(1)</script>"


def _grid_png(seed: int, cells: int = 4, side: int = 28, channels: int = 1) -> bytes:
    """A cells x cells grid of random side x side tiles with 2-pixel gutters, as PNG bytes."""
    rng = np.random.default_rng(seed)
    size = cells * (side + 2) + 2
    shape = (size, size) if channels == 1 else (size, size, channels)
    arr = np.zeros(shape, dtype=np.uint8)
    for i in range(cells):
        for j in range(cells):
            y, x = 2 + i * (side + 2), 2 + j * (side + 2)
            tile_shape = (side, side) if channels == 1 else (side, side, channels)
            arr[y : y + side, x : x + side] = rng.integers(0, 256, tile_shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _curve(start: float, n: int = 20, every: int = 25) -> list[tuple[int, float]]:
    return [((i + 1) * every, start / (1 + 0.3 * i)) for i in range(n)]


def make_runs() -> list[ReportRun]:
    return [
        ReportRun(
            name="diffusion", family="diffusion", data="mnist", modality="image", parameters=1_234_567, steps=500,
            train_items_per_s=1234.4, sample_items_per_s=56.78, unit="img", grid_png=_grid_png(0),
            curves={"main/loss": _curve(0.9), "eval/fd": [(250, 80.0), (500, 40.0)]},
        ),
        ReportRun(
            name=WEIRD_NAME, family="gan", data="cifar10", modality="image", parameters=45_000, steps=12_000,
            train_items_per_s=None, sample_items_per_s=98765.0, unit="img", grid_png=_grid_png(1, channels=3),
            curves={"gen/loss": _curve(2.0), "disc/loss": _curve(1.4), "eval/fd": [(250, 120.0), (500, 90.0)]},
        ),
        ReportRun(
            name="transformer", family="transformer", data="tinyshakespeare", modality="text", parameters=812_000,
            steps=300, train_items_per_s=20_000.0, sample_items_per_s=350.0, unit="tok",
            text_samples=[SCRIPT, "ROMEO:\nBut soft & <what> light", "x" * 5000, "four", "five", "six"],
            curves={"main/loss": _curve(4.2)},
        ),
        # nothing but the required fields: no grid, no texts, no curves, no speeds
        ReportRun(name="vae", family="vae", data="mnist", modality="image", parameters=99, steps=0,
                  train_items_per_s=None, sample_items_per_s=None, unit="img"),
    ]


def make_tables() -> list[MetricsTable]:
    images = MetricsTable(
        title="Images: mnist, 500 samples vs the val split (460 items), features: classifier",
        columns=["fd", "kid", "precision", "recall"],
        rows=[
            ("real data (held-out)", {"fd": 0.4321, "kid": 0.01, "precision": 0.999, "recall": 0.998}),
            ("diffusion", {"fd": 12.345, "kid": 3.21, "precision": 0.8766, "recall": 0.5}),
            (WEIRD_NAME, {"fd": 45.6, "kid": None, "precision": 0.6543, "recall": 0.7123}),
            ("vae", {"fd": 1234567.0, "kid": 250.0, "precision": 0.4}),
        ],
        notes=["fd: Fréchet distance, lower is better", "precision & recall <k=3>: higher is better"],
        lower_is_better={"fd", "kid"},
        reference_rows={"real data (held-out)"},
    )
    text = MetricsTable(
        title="Text: tinyshakespeare",
        columns=["perplexity", "distinct-2"],
        rows=[("transformer", {"perplexity": 5.4321, "distinct-2": 0.61}),
              ("bigram baseline", {"perplexity": 9.87, "distinct-2": 0.43})],
        lower_is_better={"perplexity"},
    )
    return [images, text]


class _Refs(HTMLParser):
    """Every URL-carrying attribute, every <img>, and whether any <script> element appears."""

    URL_ATTRS: ClassVar[set[str]] = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background", "xlink:href"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.imgs: list[dict[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        d = {k: (v or "") for k, v in attrs}
        if tag == "img":
            self.imgs.append(d)
        for k, v in d.items():
            if k in self.URL_ATTRS:
                self.urls.append((tag, k, v))


def _parse(page: str) -> _Refs:
    p = _Refs()
    p.feed(page)
    p.close()
    return p


def test_report_is_self_contained_and_escaped():
    runs, tables = make_runs(), make_tables()
    page = render_report(runs, tables, title="compare <all>", subtitle="four families & friends")
    refs = _parse(page)

    # nothing outside the page: every src/href is a data: URI, no URLs or CSS url() anywhere, no scripts
    assert "http://" not in page and "https://" not in page
    assert 'src="/' not in page and "src='" not in page and "url(" not in page
    assert refs.urls, "expected inline images"
    for tag, attr, value in refs.urls:
        assert value.startswith("data:image/png;base64,"), f"<{tag} {attr}> points outside the page: {value[:80]}"
    assert "script" not in refs.tags and "<script" not in page.lower()
    assert html.escape(SCRIPT) in page

    # every run name (escaped) and every grid as a data URI with its alt text
    for r in runs:
        assert html.escape(r.name) in page
    assert WEIRD_NAME not in page
    grids = [i for i in refs.imgs if i.get("class") == "grid"]
    assert len(grids) == 2
    for r in runs[:2]:
        uri = "data:image/png;base64," + base64.b64encode(r.grid_png).decode()
        assert any(i["src"] == uri and i["alt"] == f"samples: {r.name}" for i in grids)
    assert "image-rendering: pixelated" in page

    # curves: one figure of per-run loss panels plus one shared figure for eval/fd; all decodable PNGs
    curves = [i for i in refs.imgs if i.get("class") == "curve"]
    assert len(curves) == 2
    for c in curves:
        img = Image.open(io.BytesIO(base64.b64decode(c["src"].split(",", 1)[1])))
        assert img.format == "PNG" and img.width > 100

    # best value per column in bold; the reference row never is (its fd 0.432 is the lowest)
    for best in ("12.3", "3.21", "0.877", "0.712", "5.43", "0.61"):
        assert f"<b>{best}</b>" in page, best
    assert "<b>0.432</b>" not in page and "<b>0.999</b>" not in page
    assert "<em>real data (held-out)</em>" in page
    assert "1,234,567" in page  # thousands separators for a large metric
    assert page.count("\u2014") >= 2  # missing metrics / speeds show a dash

    # overview formatting
    assert "1.23 M" in page and "45 k" in page and "1,234 img/s" in page and "98,765 img/s" in page
    assert "20,000 tok/s" in page and "56.8 img/s" in page and "12,000" in page

    # text samples: the first 4, each at most ~1,500 chars
    assert page.count('<pre class="sample">') == 4
    assert "x" * 1500 + "\u2026" in page and "x" * 1501 not in page
    assert "five" not in page
    assert "generated" in page and "four families &amp; friends" in page and "compare &lt;all&gt;" in page


def test_report_renders_when_pieces_are_missing(tmp_path):
    bare = ReportRun(name="t", family="transformer", data="d", modality="text", parameters=1, steps=1,
                     train_items_per_s=None, sample_items_per_s=None, unit="tok")
    assert "no runs" in render_report([], [])
    page = render_report([bare], [])
    assert "no metrics" in page and "<img" not in page
    empty = MetricsTable(title="empty", columns=["fd"], rows=[("only", {})], lower_is_better={"fd"})
    page = render_report([bare], [empty])
    assert "<b>" not in page and "\u2014" in page
    out = write_report(tmp_path / "sub" / "r.html", [bare], [empty], title="x")
    assert out == tmp_path / "sub" / "r.html" and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.slow
def test_report_in_headless_chromium(tmp_path):
    exe = chromium()
    from playwright.sync_api import sync_playwright

    runs, tables = make_runs(), make_tables()
    path = write_report(tmp_path / "report.html", runs, tables, subtitle="4 runs, 2 tables")
    shot = artifacts_dir() / "report.png"

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=exe,
            args=BROWSER_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(path.resolve().as_uri(), wait_until="load")

            # nothing fetched besides the page itself and its data: images
            assert all(u.startswith(("file:", "data:")) for u in requested), requested

            # every image decoded
            for cls, expected in (("grid", 2), ("curve", 2)):
                imgs = page.locator(f"img.{cls}")
                assert imgs.count() == expected
                for i in range(expected):
                    img = imgs.nth(i)
                    assert img.evaluate("e => e.complete && e.naturalWidth > 0"), f"img.{cls} #{i} did not decode"
                    assert img.is_visible() and img.bounding_box()["width"] > 50

            # the metrics tables are visible, with their rows
            metrics = page.locator("table.metrics")
            assert metrics.count() == len(tables)
            for i, t in enumerate(tables):
                assert metrics.nth(i).is_visible()
                assert metrics.nth(i).locator("tbody tr").count() == len(t.rows)
            assert page.locator("table.overview tbody tr").count() == len(runs)
            assert page.locator("td.best b").count() >= 6

            # nothing wider than the viewport (tables scroll inside their own box)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000

"""Figures as PNG bytes: matplotlib on its Agg backend (no display, no window), and a named, captioned figure
that the report embeds and ``genforge eval`` keeps as a file beside eval.json (``results.save_figures``)."""

from __future__ import annotations

import io
from typing import Any, NamedTuple


class Figure(NamedTuple):
    name: str  # the file stem it is kept under: "columns" -> columns.png
    caption: str  # shown under it in the report (and as its alt text)
    png: bytes


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: figures render to bytes wherever there is no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes, then closed (pyplot keeps every open figure alive otherwise)."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})  # no URL in the PNG
    finally:
        plt.close(fig)
    return buf.getvalue()

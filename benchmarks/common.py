"""Small helpers the benchmark scripts share: command-line lists, the machine's name, number cells."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path


def csv(text: str) -> list[str]:
    """An argparse type: "a,b,c" -> ["a", "b", "c"] (an empty list is an error)."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def cpu_name() -> str:
    """The CPU's model name, for the machine line of a results file."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(value, digits: int = 3) -> str:
    """A table cell: "-" for None, text as is, numbers to ``digits`` significant digits (thousands with commas)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"

"""Imports flow one way: cli -> serve -> export -> demo -> refine -> api -> models -> train / evaluate -> modalities -> runs ->
families -> nets / sampling -> data -> config, errors, io. A module imports its own layer and the layers
below, never above; no two modules import each other through any path; and every module imports on its
own, in a fresh state."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import genforge

SRC = Path(genforge.__file__).parent
# top first: each entry is the first name under genforge (a module or a package)
LAYERS = [{"cli"}, {"serve"}, {"export"}, {"demo"}, {"refine"}, {"api"}, {"models"}, {"train", "evaluate"}, {"modalities"}, {"runs"},
          {"families"}, {"nets", "sampling"}, {"data"},
          {"config", "errors", "io", "runlock", "launch", "draws", "progress"}]
KNOWN_UPWARD: set[tuple[str, str]] = set()  # none: every edge points down


def modules() -> dict[str, Path]:
    """Every module except package __init__ files (a package's facade may re-export from any layer)."""
    out = {}
    for path in SRC.rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):  # facades, and `python -m genforge` (it runs the command)
            continue
        out["genforge." + ".".join(path.relative_to(SRC).with_suffix("").parts)] = path
    return out


def imports(path: Path) -> set[str]:
    """genforge modules ``path`` imports anywhere (module level or inside functions, typing-only too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genforge"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("genforge"))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t in imports(p) if t in mods and t != m} for m, p in mods.items()}


def layer(module: str) -> int:
    key = module.split(".")[1]
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layering.py")


def test_no_module_imports_a_layer_above_its_own():
    upward = {(m, t) for m, targets in graph().items() for t in targets if layer(t) < layer(m)}
    assert upward == KNOWN_UPWARD, sorted(upward - KNOWN_UPWARD)


def test_no_import_circles():
    edges = graph()
    for a, b in KNOWN_UPWARD:
        edges[a].discard(b)
    # Tarjan's strongly connected components: any with two or more modules is a circle
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_every_module_imports_on_its_own():
    """Each module in a state where no other genforge module was imported first (one process; torch and
    the other libraries stay loaded, which is what makes this quick)."""
    names = sorted(modules())
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'genforge' or m.startswith('genforge.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        print(f'{name}: {type(e).__name__}: {e}')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr[-2000:]

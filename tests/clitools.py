"""Running the real `genforge` process from tests, to see exactly what a user sees."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout


def command(*args) -> list[str]:
    """The argv of `genforge ARGS...` run by this interpreter."""
    return [sys.executable, "-m", "genforge.cli", *map(str, args)]


def environment(extra: dict | None = None) -> dict:
    """This process's environment for a `genforge` process: unbuffered output, one intra-op and BLAS thread."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **(extra or {})}


def cli(*args, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`genforge ARGS...` in a subprocess (unbuffered, one BLAS thread); returns the finished process."""
    return subprocess.run(command(*args), capture_output=True, text=True, env=environment(env), timeout=timeout)


def start(*args) -> subprocess.Popen:
    """`genforge ARGS...` started in a subprocess (as ``cli``) and left running: to signal, kill or race it."""
    return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment())


def run_main(*args) -> subprocess.CompletedProcess:
    """`genforge ARGS...` through the console script's entry point (``genforge.cli.main``) in this process:
    the same exit code, stdout and stderr a user sees, without a new interpreter's start-up (seconds each).
    Use it for error-path tables; keep ``cli`` for what needs a real process (signals, locks, kills)."""
    from genforge.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["genforge", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:  # as the interpreter does: None is success, a message is printed with code 1
                code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["genforge", *map(str, args)], code, out.getvalue(), err.getvalue())


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """A user mistake: exit 1, no traceback, exactly one `error:` line (returned)."""
    errors = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-800:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def invoke(*args) -> str:
    """`genforge ARGS...` in this process (Typer's runner): asserts success, returns the output."""
    from typer.testing import CliRunner

    from genforge.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output

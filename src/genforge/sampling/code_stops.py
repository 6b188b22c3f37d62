"""Code stops: Python samples that end at top-level statement boundaries, as small pure functions of text.

Codex and HumanEval end a completion at the next top-level statement ("\\ndef", "\\nclass", "\\nif", ...):
what comes after a finished block is another program's start, and a length limit that falls inside a
statement leaves code that does not parse. These helpers find top-level statement starts in decoded
Python text with a small scanner (strings, brackets, comments and line continuations tracked, so a
docstring line or an argument list at column 0 is not a statement) and place the cuts:

  "trim"   a sample that ran out of tokens (not ended by end-of-text or a stop string) loses its last
           top-level statement, which may be unfinished;
  "block"  that, and a sample ends just before the first top-level statement that follows a complete
           block (a statement with an indented body: def, class, if, for, with, try, ...);
  "auto"   "block" for Python code, "off" otherwise (resolved by the layer that knows the data);
  "off"    neither.

A cut never leaves the continuation (the text after ``start``, the prompt's end) without content: a
sample that is one unfinished statement is kept whole rather than emptied. Like stop strings these work
on decoded text, which only a layer with the tokenizer has (``models/text.py``, the text scorer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from genforge.errors import ConfigError

CODE_STOPS = ("off", "trim", "block", "auto")
# lines at column 0 that continue the statement above them rather than start a new one
_CONTINUATIONS = frozenset({"else", "elif", "except", "finally"})
_QUOTES = ("'''", '"""', "'", '"')


def resolve_code_stop(mode: str, is_python: bool) -> str:
    """The code stop a sample uses: ``mode`` itself, with "auto" meaning "block" for Python code, else "off"."""
    if mode not in CODE_STOPS:
        raise ConfigError(f"unknown code_stop '{mode}'; expected one of: {', '.join(CODE_STOPS)}")
    if mode == "auto":
        return "block" if is_python else "off"
    return mode


@dataclass(frozen=True)
class Statement:
    """A top-level statement's first character in a text, and what the scan knows about it.

    ``after_block``: the statement before it had an indented body (it closes a complete block).
    ``decided``: its first line shows it is a new statement; an unfinished last line such as "els" is
    not decided (it may still become ``else:``, which continues the statement above).
    """

    start: int
    after_block: bool
    decided: bool = True


def top_level_statements(text: str) -> list[Statement]:
    """Every top-level statement start in ``text`` (Python source, possibly cut anywhere), in order.

    Only a line that begins at column 0 outside strings, brackets and backslash continuations starts a
    statement; blank and comment lines never do, ``else``/``elif``/``except``/``finally`` continue the
    statement above, and the ``def`` or ``class`` under a decorator belongs to the decorator's statement.
    """
    found: list[Statement] = []
    body = decorating = False
    for line_start, logical in _line_starts(text):
        end = text.find("\n", line_start)
        line = text[line_start:] if end < 0 else text[line_start:end]
        if not logical or not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t":
            body = True
            continue
        word, complete = _first_word(line, end >= 0)
        if complete and word in _CONTINUATIONS:
            continue
        if decorating and not body:
            decorating = line.startswith("@")
            continue
        decided = complete or not any(k.startswith(word) for k in _CONTINUATIONS)
        found.append(Statement(line_start, body, decided))
        body, decorating = False, line.startswith("@")
    return found


def _first_word(line: str, line_ended: bool) -> tuple[str, bool]:
    """The identifier a line starts with, and whether it is known in full (a character after it, or the
    line ended); a line that starts with anything else is known at once."""
    end = 0
    while end < len(line) and (line[end].isalnum() or line[end] == "_"):
        end += 1
    return line[:end], end < len(line) or line_ended or end == 0


def _line_starts(text: str) -> Iterator[tuple[int, bool]]:
    """(offset, whether a logical line starts there) for each physical line of ``text``: False inside a
    string, a bracket or after a backslash continuation."""
    quote, depth, i = "", 0, 0
    yield 0, True
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i, quote = i + len(quote), ""
                continue
            if ch == "\n" and len(quote) == 1:  # an unterminated one-line string ends with its line
                quote = ""
        elif ch == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif ch in "'\"":
            quote = next(q for q in _QUOTES if text.startswith(q, i))
            i += len(quote)
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == "\\" and text.startswith("\n", i + 1):  # the next line continues this one
            i += 2
            yield i, False
            continue
        if ch == "\n":
            yield i + 1, not quote and depth == 0
        i += 1


def block_boundary(text: str, start: int = 0) -> int:
    """Where "block" ends a sample: the first decided top-level statement after a complete block that
    starts at or after ``start`` with content between, or -1 when there is none yet."""
    for s in top_level_statements(text):
        if s.after_block and s.decided and s.start >= start and text[start:s.start].strip():
            return s.start
    return -1


def starts_new_line_at_column_0(text: str, since: int) -> bool:
    """Whether a line of ``text`` that overlaps ``text[since:]`` starts with a non-blank character at
    column 0: a cheap test (no scan) that is true whenever a top-level statement may have been decided
    since ``text`` was ``since`` characters long, so a generation loop scans only then."""
    first = text.rfind("\n", 0, since) + 1
    return any(line[:1].strip() for line in text[first:].split("\n"))


def trim_point(text: str, start: int = 0) -> int:
    """Where "trim" cuts a sample that ran out of tokens: its last decided top-level statement start with
    content between ``start`` and it; ``len(text)`` when there is none. An undecided last line is no cut:
    "exc" may be the ``except`` a ``try`` above needs, and a stream must never have shown text that a
    later cut takes back (decided starts only accumulate, so the point never moves back)."""
    for s in reversed(top_level_statements(text)):
        if s.decided and s.start >= start and text[start:s.start].strip():
            return s.start
    return len(text)


def code_stop_cut(text: str, start: int, mode: str, ended: bool) -> int:
    """How much of a finished sample ``text`` (prompt up to ``start``, then the continuation) a code stop
    keeps. ``ended``: the sample ended on its own (end-of-text, a stop string), not at the length limit."""
    if mode == "off":
        return len(text)
    if mode == "block" and (cut := block_boundary(text, start)) >= 0:
        return cut
    return len(text) if ended else trim_point(text, start)


def code_held_back(text: str, start: int, mode: str) -> int:
    """How many trailing characters of a partial sample a stream must not show yet under a code stop:
    everything from the point a length limit would trim at, or from an undecided last line that may yet
    become such a point ("f" may become ``for``), whichever is earlier. "block" may end the sample there
    too, never earlier: an earlier boundary would have ended it already."""
    if mode == "off":
        return 0
    hold = trim_point(text, start)
    statements = top_level_statements(text)
    if statements and not statements[-1].decided:
        last = statements[-1].start
        if last >= start and text[start:last].strip():
            hold = min(hold, last)
    return len(text) - hold


def ended_at_end_of_text(ids: Sequence[int], prompt_len: int, eot: int) -> bool:
    """Whether a row's continuation ended at an end-of-text token that follows content (where the text
    codec ends a text) rather than at the length limit; leading end-of-text tokens end nothing."""
    new = [int(t) for t in ids[prompt_len:]]
    first = next((i for i, t in enumerate(new) if t != eot), None)
    return first is not None and eot in new[first:]

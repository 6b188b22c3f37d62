"""Text and code sample metrics: distinct-n, self-BLEU and the share of code that parses.

All text metrics share one tokenisation (``words``) so their numbers are comparable across
runs and do not depend on the tokenizer of the model that produced the text.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["distinct_n", "parse_share", "self_bleu", "words"]

_TOKEN = re.compile(r"\w+|[^\w\s]")

# Chen & Cherry (2014) smoothing "method1", as nltk's SmoothingFunction().method1: a zero
# n-gram match count becomes epsilon, so one missing 4-gram does not zero the whole score.
_EPSILON = 0.1


def words(text: str) -> list[str]:
    r"""Split ``text`` into word tokens with the regex ``\w+|[^\w\s]``.

    Runs of letters, digits and underscores (Unicode-aware) are one token; every other
    non-space character is a token of its own, so punctuation counts in n-grams but
    whitespace does not. Case is kept. Simple and model-independent on purpose: the metrics
    must not change when the model's tokenizer does.
    """
    return _TOKEN.findall(text)


def _texts(texts: Sequence[str], what: str) -> list[str]:
    """``texts`` as a list of strings, refusing a bare string (which would iterate by character)."""
    if isinstance(texts, (str, bytes)):
        raise ValueError(f"{what} must be a sequence of strings, got a single {type(texts).__name__}")
    items = list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{what} must all be strings, item {i} is {type(item).__name__}")
    return items


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / total word n-grams, pooled over all texts (Li et al. 2016).

    Pooling makes it a corpus-level diversity score: a model repeating one sentence scores
    low even if each sentence is varied inside. 0.0 when no text has n words.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    unique: set[tuple[str, ...]] = set()
    total = 0
    for text in _texts(texts, "texts"):
        tokens = words(text)
        for i in range(len(tokens) - n + 1):
            unique.add(tuple(tokens[i : i + n]))
            total += 1
    return len(unique) / total if total else 0.0


def self_bleu(texts: Sequence[str], max_n: int = 4, max_texts: int = 200, seed: int = 0) -> float:
    """Mean BLEU of each text against all the other texts as references (Zhu et al. 2018).

    High self-BLEU means the samples resemble one another: low diversity. Each score equals
    nltk's ``sentence_bleu(others, text, smoothing_function=SmoothingFunction().method1)``
    with uniform weights 1/max_n: clipped n-gram precisions for n = 1..max_n, zero match
    counts smoothed to epsilon = 0.1, a brevity penalty against the closest reference length
    (the shorter on ties), and 0 when no word matches. Texts with no words score 0; texts
    shorter than max_n words are penalised (their missing orders count as 0.1), as in nltk.

    Above ``max_texts`` texts, a subset drawn without replacement with
    ``numpy.random.default_rng(seed)`` stands in for the corpus (references included),
    keeping the cost bounded. Instead of nltk's pass over every reference for every text,
    each text's n-grams are counted once, and per n-gram the two highest counts and the
    holder of the highest are kept: the clip count against all OTHER texts is then the top
    count, or the runner-up for the text that holds the top one.
    """
    items = _texts(texts, "texts")
    if len(items) < 2:
        raise ValueError("self-BLEU needs at least 2 texts")
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive integer, got {max_n!r}")
    if isinstance(max_texts, bool) or not isinstance(max_texts, int) or max_texts < 2:
        raise ValueError(f"max_texts must be an integer >= 2, got {max_texts!r}")
    if len(items) > max_texts:
        chosen = np.random.default_rng(seed).choice(len(items), max_texts, replace=False)
        items = [items[i] for i in sorted(chosen)]

    tokens = [words(t) for t in items]
    lengths = np.array([len(t) for t in tokens])
    counts = [[_ngrams(t, n) for n in range(1, max_n + 1)] for t in tokens]

    # Per order, per n-gram: (top count, index of a text holding it, runner-up count).
    tops: list[dict[tuple[str, ...], tuple[int, int, int]]] = [{} for _ in range(max_n)]
    for i, per_order in enumerate(counts):
        for order, counter in enumerate(per_order):
            table = tops[order]
            for gram, c in counter.items():
                first, holder, second = table.get(gram, (0, -1, 0))
                if c > first:
                    table[gram] = (c, i, first)
                elif c > second:
                    table[gram] = (first, holder, c)

    weight = 1.0 / max_n
    scores = []
    for i, per_order in enumerate(counts):
        hyp_len = int(lengths[i])
        if hyp_len == 0:
            scores.append(0.0)
            continue
        log_terms = []
        unigram_matches = 0
        for order, counter in enumerate(per_order):
            table = tops[order]
            matches = 0
            for gram, c in counter.items():
                first, holder, second = table[gram]
                matches += min(c, second if holder == i else first)
            total = max(1, sum(counter.values()))
            if order == 0:
                unigram_matches = matches
            log_terms.append(weight * math.log(matches / total if matches else _EPSILON / total))
        if unigram_matches == 0:
            scores.append(0.0)
            continue
        scores.append(_brevity_penalty(hyp_len, np.delete(lengths, i)) * math.exp(math.fsum(log_terms)))
    return float(np.mean(scores))


def _brevity_penalty(hyp_len: int, ref_lengths: np.ndarray) -> float:
    """BLEU's brevity penalty against the reference length closest to hyp_len, the shorter on ties."""
    gaps = np.abs(ref_lengths - hyp_len)
    closest = int(ref_lengths[gaps == gaps.min()].min())
    return 1.0 if hyp_len > closest else math.exp(1 - closest / hyp_len)


def parse_share(snippets: Sequence[str]) -> float:
    """Share of code snippets that Python's ``ast.parse`` accepts: a cheap syntax-validity rate.

    A snippet that does not end with a newline usually stopped at the length limit in the
    middle of a line, so that unfinished last line (everything after the last "\\n") is
    dropped before parsing; a snippet with no newline at all is parsed whole, since dropping
    its only line would fail every one-liner. Empty or whitespace-only code counts as a
    failure. Parser errors of every kind (syntax, null bytes, nesting too deep for the
    parser) count as failures rather than raising, and syntax warnings are silenced.
    """
    items = _texts(snippets, "snippets")
    if not items:
        raise ValueError("parse_share needs at least 1 snippet, got an empty list")
    return sum(_parses(s) for s in items) / len(items)


def _parses(snippet: str) -> bool:
    if not snippet.endswith("\n"):
        cut = snippet.rfind("\n")
        if cut >= 0:
            snippet = snippet[: cut + 1]
    if not snippet.strip():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(snippet)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True

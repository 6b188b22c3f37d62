"""Text metrics on hand-made texts with known answers, and self-BLEU cross-checked against nltk."""

import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genforge.evaluate.text_metrics import distinct_n, parse_share, self_bleu, words

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- words / distinct-n


def test_words_splits_word_runs_and_keeps_punctuation_as_tokens():
    assert words("Hello, world! x_1 = 2.5") == ["Hello", ",", "world", "!", "x_1", "=", "2", ".", "5"]
    assert words("  \n\t ") == []
    assert words("naïve café") == ["naïve", "café"]


@pytest.mark.parametrize(
    ("texts", "n", "expected"),
    [
        (["a b a b", "a b"], 1, 2 / 6),  # a b a b a b: 6 unigrams, 2 distinct
        (["a b a b", "a b"], 2, 2 / 4),  # ab ba ab | ab: 4 bigrams, 2 distinct (pooled over texts)
        (["a b a b", "a b"], 3, 2 / 2),  # aba bab: the short text has no trigram
        (["a b a b", "a b"], 5, 0.0),  # no text has 5 words
        (["a, a."], 1, 3 / 4),  # punctuation marks are tokens
        (["the cat", "The cat"], 1, 3 / 4),  # case is kept
        ([], 1, 0.0),
        (["", "   "], 1, 0.0),
    ],
)
def test_distinct_n_on_hand_made_texts(texts, n, expected):
    assert distinct_n(texts, n) == pytest.approx(expected)


def test_distinct_n_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        distinct_n(["a b"], 0)
    with pytest.raises(ValueError, match="single str"):
        distinct_n("a b c", 1)  # one string would be read character by character


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=6), st.integers(1, 4))
def test_distinct_n_stays_in_the_unit_interval(texts, n):
    assert 0.0 <= distinct_n(texts, n) <= 1.0


# --------------------------------------------------------------------------- self-BLEU


def _nltk_self_bleu(texts: list[str]) -> float:
    """The definition written with nltk: mean sentence BLEU of each text against all the others."""
    bleu = pytest.importorskip("nltk.translate.bleu_score")
    smoothing = bleu.SmoothingFunction().method1
    tokens = [words(t) for t in texts]
    scores = []
    for i, hypothesis in enumerate(tokens):
        references = tokens[:i] + tokens[i + 1 :]
        scores.append(bleu.sentence_bleu(references, hypothesis, smoothing_function=smoothing) if hypothesis else 0.0)
    return float(np.mean(scores))


def _random_corpus(rng: random.Random) -> list[str]:
    vocab = ["the", "cat", "sat", "on", "mat", "a", "dog", ",", ".", "ran"]
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(2, 7))]


def test_self_bleu_equals_nltk_sentence_bleu_averaged_over_texts():
    pytest.importorskip("nltk")
    rng = random.Random(0)
    corpora = [_random_corpus(rng) for _ in range(60)]
    corpora += [
        ["the cat sat on the mat", "the cat sat on the mat", "a dog ran"],  # ties in the top n-gram count
        ["the the the the the the", "the cat is on the mat", "there is a cat on the mat"],  # clipping
        ["one two", "one two three four five six seven", ""],  # short text, empty reference, brevity penalty
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for texts in corpora:
            assert self_bleu(texts) == pytest.approx(_nltk_self_bleu(texts), rel=1e-12, abs=1e-15), texts


def test_self_bleu_of_a_subset_equals_nltk_on_that_subset():
    pytest.importorskip("nltk")
    texts = _random_corpus(random.Random(1)) + _random_corpus(random.Random(2)) + _random_corpus(random.Random(3))
    texts = [t for t in texts if t][:8] + ["the cat sat", "on the mat"]
    chosen = sorted(np.random.default_rng(7).choice(len(texts), 5, replace=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _nltk_self_bleu([texts[i] for i in chosen])
    assert self_bleu(texts, max_texts=5, seed=7) == pytest.approx(expected, rel=1e-12)


def test_self_bleu_of_identical_texts_is_one():
    assert self_bleu(["the quick brown fox jumps over the lazy dog"] * 5) == pytest.approx(1.0)


def test_self_bleu_of_texts_without_shared_words_is_zero():
    texts = ["alpha beta gamma delta", "one two three four", "red green blue yellow"]
    assert self_bleu(texts) == pytest.approx(0.0, abs=1e-12)


def test_self_bleu_rises_with_repetition():
    varied = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn today"]
    repetitive = ["the cat sat on the mat", "the cat sat on a mat", "the cat sat on the rug"]
    assert self_bleu(repetitive) > self_bleu(varied) + 0.3


def test_self_bleu_needs_two_texts():
    with pytest.raises(ValueError, match="self-BLEU needs at least 2 texts"):
        self_bleu(["only one"])
    with pytest.raises(ValueError, match="self-BLEU needs at least 2 texts"):
        self_bleu([])


# --------------------------------------------------------------------------- parse share


@pytest.mark.parametrize(
    ("snippet", "parses"),
    [
        pytest.param("x = 1\nprint(x)\n", True, id="valid-module"),
        pytest.param("def f(x):\n    return x\nprint(f(", True, id="unfinished-last-line-dropped"),
        pytest.param("x = 1", True, id="one-line-without-newline-parsed-whole"),
        pytest.param("if x:\n    y = (", False, id="dropping-the-last-line-leaves-an-empty-body"),
        pytest.param("def f(:\n    pass\n", False, id="garbage"),
        pytest.param("", False, id="empty"),
        pytest.param("  \n\t\n", False, id="whitespace-only"),
        pytest.param("print(", False, id="unfinished-only-line"),
        pytest.param("x = 1\x00\n", False, id="null-byte"),
        pytest.param("x" + "[0]" * 100_000 + "\n", False, id="too-deep-for-the-parser"),
        pytest.param("-" * 100_000 + "1\n", False, id="parser-stack-overflow"),
    ],
)
def test_parse_share_of_one_snippet(snippet, parses):
    assert parse_share([snippet]) == (1.0 if parses else 0.0)


def test_parse_share_is_the_share_of_snippets_that_parse():
    assert parse_share(["x = 1\n", "def", "y = 2\n", ""]) == 0.5


def test_parse_share_silences_syntax_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_share(['pattern = "\\d+"\n']) == 1.0  # invalid escape: a warning, not an error


def test_parse_share_needs_snippets():
    with pytest.raises(ValueError, match="at least 1 snippet"):
        parse_share([])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=5))
def test_parse_share_never_raises_on_arbitrary_text(snippets):
    assert 0.0 <= parse_share(snippets) <= 1.0

"""Text: validation loss, perplexity and bits per byte from the family's ``log_likelihood``, and
distinct-n, self-BLEU (and for code, the share that parses) of ``n`` samples."""

from __future__ import annotations

import math

import numpy as np
import torch

from genforge.data.text import is_python_source
from genforge.errors import ConfigError
from genforge.evaluate.scorers.featureless import FeaturelessScorer

TEXT_SAMPLE_TOKENS = 256  # tokens per scored sample
MAX_VAL_TOKENS = 131_072  # bits per byte are measured on at most this many validation tokens


class TextScorer(FeaturelessScorer):
    kind = "text"
    sample_batch = 100

    def __init__(self, evaluator):
        super().__init__(evaluator)
        self.sample_tokens = TEXT_SAMPLE_TOKENS
        self.is_code = is_python_source(evaluator.data)

    def reference_info(self) -> dict:
        return {"data": self.evaluator.data, "split": "val", "tokens": self.val_token_count(),
                "entry": self.prepared.path.name}

    def val_token_count(self) -> int:
        return min(self.prepared.val.num_tokens - 1, MAX_VAL_TOKENS)

    def score(self, family, amp_dtype) -> tuple[dict, dict, list[str]]:
        metrics = self.val_likelihood(family, amp_dtype)
        prompt = [self.prepared.tokenizer.eot_id]
        tokens, seconds = self.evaluator.draw(family, amp_dtype, self.sample_batch, prompt=prompt,
                                              max_new_tokens=self.sample_tokens)
        texts = self.code_stopped(family, self.decode(tokens, len(prompt)), tokens, len(prompt))
        metrics.update(text_scores(texts, self.is_code))
        sampling = {"items_per_s": self.evaluator.n * self.sample_tokens / max(seconds, 1e-9), "unit": "tok",
                    "max_new_tokens": self.sample_tokens}
        return metrics, sampling, texts

    def val_likelihood(self, family, amp_dtype=None) -> dict:
        """Validation loss (nats/token), perplexity and bits per byte over non-overlapping windows.

        Bits per byte divide the total by the bytes of the predicted text (as in the files), so tokenizers with
        different vocabularies compare; end-of-text predictions count toward the loss, not the bytes.
        """
        loss, nats, n_bytes = token_likelihood(self.evaluator, family, amp_dtype, byte_lengths(self.prepared.tokenizer))
        return {"val_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                "bits_per_byte": nats / (max(n_bytes, 1) * math.log(2))}

    def decode(self, tokens: torch.Tensor, prompt_len: int = 0) -> list[str]:
        """Texts as `genforge sample` writes them (the text codec's rule: each row up to the end-of-text
        that follows its content), without the prompt."""
        from genforge.data.codecs import TextCodec

        codec = TextCodec(self.prepared.tokenizer)
        prompt = self.prepared.tokenizer.decode(tokens[0, :prompt_len].tolist()) if prompt_len else ""
        return [codec.decode_one(row, prompt_len)[len(prompt):] for row in tokens]

    def code_stopped(self, family, texts: list[str], tokens: torch.Tensor, prompt_len: int) -> list[str]:
        """The texts cut by the run's code stop (``model.code_stop``, off for a family or run without it), as
        `genforge sample` cuts them: the scores are those of what users receive."""
        from genforge.sampling.code_stops import code_stop_cut, ended_at_end_of_text, resolve_code_stop

        mode = resolve_code_stop(getattr(family.config, "code_stop", "off"), self.is_code)
        eot = self.prepared.tokenizer.eot_id
        return [text[:code_stop_cut(text, 0, mode, ended_at_end_of_text(row, prompt_len, eot))]
                for text, row in zip(texts, tokens)]

    def reference_texts(self) -> list[str]:
        """``n`` real validation snippets shaped like the samples: they begin at a document start and
        are as long as a sample, so their scores are what a perfect model would get."""
        tokens = np.asarray(self.prepared.val.tokens)
        eot = self.prepared.tokenizer.eot_id
        length = self.sample_tokens
        starts = np.flatnonzero(tokens[:-length - 1] == eot) + 1
        if len(starts) < 2:
            starts = np.arange(0, max(len(tokens) - length, 1))
        rng = np.random.default_rng(self.evaluator.seed)
        chosen = rng.choice(starts, size=min(self.evaluator.n, len(starts)), replace=False)
        windows = torch.from_numpy(np.stack([tokens[s:s + length] for s in chosen]).astype(np.int64))
        return self.decode(windows)

    def reference_metrics(self) -> dict | None:
        texts = self.reference_texts()
        if len(texts) < 2:  # a held-out split shorter than two samples: no floor to show
            return None
        return text_scores(texts, self.is_code)


def token_likelihood(evaluator, family, amp_dtype, byte_len: torch.Tensor | None = None) -> tuple[float, float, int]:
    """(mean nats per token, total nats, bytes predicted) of the family on non-overlapping validation windows."""
    from genforge.train.device import autocast

    val = evaluator.prepared.val
    block = val.block_size
    count_tokens = min(val.num_tokens - 1, MAX_VAL_TOKENS)
    starts = np.arange(0, count_tokens - block + 1, block)
    if len(starts) == 0:
        raise ConfigError(f"the validation split has too few tokens for one window of {block}")
    nats, count, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for lo in range(0, len(starts), 32):
            batch = {k: v.to(family.device) for k, v in val.get(starts[lo:lo + 32]).items()}
            with autocast(family.device, amp_dtype):
                nll = family.log_likelihood(batch)
            nats += float(nll.double().sum())
            count += nll.numel()
            if byte_len is not None:
                n_bytes += int(byte_len[batch["y"].cpu()].sum())
    return nats / count, nats, n_bytes


def text_scores(texts: list[str], is_code: bool) -> dict:
    from genforge.evaluate.text_metrics import distinct_n, parse_share, self_bleu

    out = {f"distinct_{k}": distinct_n(texts, k) for k in (1, 2, 3)}
    out["self_bleu"] = self_bleu(texts)
    if is_code:
        out["parse_share"] = parse_share(texts)
    return out


def byte_lengths(tokenizer) -> torch.Tensor:
    """Bytes each token id stands for (0 for special tokens); a byte-level BPE token may hold part
    of a character, so this asks the tokenizer rather than decoding tokens one by one."""
    return torch.tensor([len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)], dtype=torch.long)


"""Runs of text and code: prompts, stop strings, streaming and fill-in-the-middle."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from genforge.errors import ConfigError
from genforge.models.base import Model
from genforge.sampling.tokens import check_stops, first_stop, held_back
from genforge.train.device import autocast


class TextModel(Model):
    """A run that writes text: ``sample`` returns strings, ``stream`` yields them while they are made."""

    serves = Model.serves | {"stream", "continue", "infill"}

    @property
    def capabilities(self) -> dict:
        """Fill-in-the-middle needs a run trained with --fim-rate (and a tokenizer with its tokens)."""
        table = super().capabilities
        if "infill" in table and (not self.run.config.data.fim_rate or self.tokenizer.fim_ids() is None):
            del table["infill"]
        return table

    def _prompt_tokens(self, prompt: str | None) -> list[int]:
        """A text run's start: the end-of-text token (a document boundary), then the encoded prompt."""
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
        return [self.tokenizer.eot_id] + (self.tokenizer.encode(prompt) if prompt else [])

    def _sample_tensors(self, n: int, seed: int, prompt: str | None, conditions: dict) -> tuple[torch.Tensor, int]:
        """Token ids; each row ends at its end-of-text token (end-of-text after it); stop strings need ``sample``."""
        conditions = self.settings("sample", **conditions).given()
        tokens = self._prompt_tokens(prompt)
        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), prompt=tokens, stop_at_end=True, **conditions)
        return out, len(tokens)

    def _even(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        # batches of text that ended early are shorter: pad with end-of-text, as their rows already end
        width = max(part.shape[-1] for part in parts)
        return [torch.nn.functional.pad(part, (0, width - part.shape[-1]), value=self.tokenizer.eot_id)
                for part in parts]

    def _sample_batch(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict) -> list[str]:
        """Texts (prompt included), each ending at end-of-text or just before its first stop string."""
        settings = self.settings("sample", stop=stop, **conditions).given()
        stops = check_stops(settings.pop("stop", None))
        tokens = self._prompt_tokens(prompt)
        prompt_text = self.tokenizer.decode(tokens)
        done = [False] * n

        def continuation(row) -> str:
            return self.codec.decode_one(row, len(tokens))[len(prompt_text):]

        def should_stop(ids: torch.Tensor) -> list[bool]:
            ids = ids.cpu()
            for i in range(n):
                done[i] = done[i] or first_stop(continuation(ids[i]), stops) >= 0
            return done

        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), prompt=tokens, stop_at_end=True,
                                     should_stop=should_stop if stops else None, **settings)
        texts = [continuation(row) for row in out.cpu()]
        return [prompt_text + (text[:cut] if (cut := first_stop(text, stops)) >= 0 else text) for text in texts]

    def sample(self, n: int = 16, seed: int = 0, prompt: str | None = None, *,
               stop: str | Sequence[str] | None = None, **conditions: Any) -> list[str]:
        """``n`` generated texts (prompt included).

        A text ends at the model's end-of-text token or just before the first of the ``stop`` strings
        in its continuation, whichever comes first; generation ends once every text has ended. The
        decoding controls are max_new_tokens, temperature, top_k, top_p, min_p and repetition_penalty
        (see ``genforge.sampling.tokens``). With ``n == 1`` the text is exactly
        ``"".join(self.stream(prompt, seed, ...))`` for the same settings.
        """
        return super().sample(n, seed, prompt, stop=stop, **conditions)

    def save_samples(self, n: int, out: str | Path, seed: int = 0, prompt: str | None = None, *,
                     stop: str | Sequence[str] | None = None, on_piece: Callable[[str], None] | None = None,
                     progress: bool = True, **conditions: Any) -> list[Path]:
        """``Model.save_samples``; for one sample, ``on_piece`` (if given) gets the text while it is generated."""
        if on_piece is None or n != 1:
            return super().save_samples(n, out, seed, prompt, stop=stop, progress=progress, **conditions)
        params = self.sample_params(n, seed, prompt, stop, conditions)
        pieces = []
        for piece in self.stream(prompt, seed, stop=stop, **conditions):
            on_piece(piece)
            pieces.append(piece)
        return self.codec.save_texts(["".join(pieces)], out, params)

    def stream(self, prompt: str | None = None, seed: int = 0, *, stop: str | Sequence[str] | None = None,
               **decoding: Any) -> Iterator[str]:
        """One text sample, as pieces of text while it is generated: the prompt first, then new text.

        ``decoding`` takes max_new_tokens and ``sample``'s controls (temperature, top_k, top_p, min_p,
        repetition_penalty; None: the family's default). The pieces join to
        ``self.sample(1, seed, prompt, ...)[0]`` with the same settings. A piece is shown only once it
        is final: text that could still become a stop string, and a half-decoded multi-byte character
        (U+FFFD), wait for the next token. Settings are checked here, before the first piece.
        """
        settings = self.settings("stream", stop=stop, **decoding).given()
        stops = check_stops(settings.pop("stop", None))
        tokens = self._prompt_tokens(prompt)
        columns = self.family.sample_stream(1, generator=self._generator(seed), prompt=tokens, stop_at_end=True,
                                            **settings)
        return self._stream_text(columns, tokens, stops)

    def _stream_text(self, columns: Iterator[torch.Tensor], tokens: list[int], stops: tuple[str, ...]) -> Iterator[str]:
        prompt_text = self.tokenizer.decode(tokens)
        if prompt_text:
            yield prompt_text
        ids, shown, text = list(tokens), 0, ""
        try:
            while True:
                with autocast(self.device, self.amp_dtype):  # only around model work, not the caller's code
                    column = next(columns, None)
                if column is None:
                    break
                ids.append(int(column[0]))
                # Decode everything again: a byte-level tokenizer's text for one token depends on its neighbours.
                text = self.codec.decode_one(ids, len(tokens))[len(prompt_text):]
                cut = first_stop(text, stops)
                if cut >= 0:
                    text = text[:cut]
                    break
                ready = len(text) - held_back(text, stops)
                if ready > shown:
                    yield text[shown:ready]
                    shown = ready
        finally:
            columns.close()  # puts the model back in its mode at once, even when the caller stops early
        if len(text) > shown:
            yield text[shown:]

    def infill(self, prefix: str, suffix: str, seed: int = 0, *, max_new_tokens: int = 256, **decoding: Any) -> str:
        """Fill in the middle: the text that belongs between ``prefix`` and ``suffix``, for text runs
        trained with ``--fim-rate`` (see ``genforge.data.fim``). Generation ends at end-of-text.

        When prefix and suffix do not fit the context together with the middle, the text nearest the
        gap is kept (the end of the prefix, the start of the suffix).
        """
        from genforge.data.fim import FimIds, psm

        if "infill" in self.family.capabilities and not self.offers("infill"):
            raise ConfigError(f"{self.run.path} was not trained for fill-in-the-middle; "
                              "train a run with --fim-rate 0.5 (a share of windows in prefix-suffix-middle order)")
        decoding = self.settings("infill", **decoding).given()
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        ids = FimIds(*self.tokenizer.fim_ids(), end=self.tokenizer.eot_id)
        before, after = self.tokenizer.encode(prefix), self.tokenizer.encode(suffix)
        block = self.spec.shape[0]
        room = block - 3 - min(max_new_tokens, block // 2)  # context left for prefix and suffix
        if len(before) + len(after) > room:
            keep_after = min(len(after), room // 2)
            keep_before = min(len(before), room - keep_after)
            keep_after = min(len(after), room - keep_before)
            before, after = before[len(before) - keep_before:], after[:keep_after]
        prompt = psm(before, [], after, ids)
        specials = set(self.tokenizer.special_ids.values())

        def should_stop(tokens: torch.Tensor) -> list[bool]:
            return [bool(set(row[len(prompt):].tolist()) & specials) for row in tokens.cpu()]

        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(1, generator=self._generator(seed), prompt=prompt, max_new_tokens=max_new_tokens,
                                     should_stop=should_stop, **decoding)
        new = out[0, len(prompt):].tolist()
        end = next((i for i, t in enumerate(new) if t in specials), len(new))
        return self.tokenizer.decode(new[:end])

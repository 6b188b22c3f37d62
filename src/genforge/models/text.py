"""Runs of text and code: prompts, stop strings, streaming and fill-in-the-middle."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from genforge.errors import ConfigError
from genforge.models.base import Model
from genforge.sampling.code_stops import (block_boundary, code_held_back, code_stop_cut, ended_at_end_of_text,
                                          resolve_code_stop, starts_new_line_at_column_0)
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
        """Token ids; each row ends at its end-of-text token (end-of-text after it); stop strings and code
        stops work on text, so they need ``sample``."""
        conditions = self.settings("sample", **conditions).given()
        conditions.pop("code_stop", None)
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
        code = self._code_stop(settings)
        tokens = self._prompt_tokens(prompt)
        prompt_text = self.tokenizer.decode(tokens)
        done = [False] * n
        scanned = [len(prompt_text)] * n  # how much of each text the code stop has looked at

        def continuation(row) -> str:
            return self.codec.decode_one(row, len(tokens))[len(prompt_text):]

        def ends_block(i: int, text: str) -> bool:
            full, since = prompt_text + text, scanned[i]
            scanned[i] = len(full)
            return starts_new_line_at_column_0(full, since) and block_boundary(full, len(prompt_text)) >= 0

        def should_stop(ids: torch.Tensor) -> list[bool]:
            ids = ids.cpu()
            for i in range(n):
                if not done[i]:
                    text = continuation(ids[i])
                    done[i] = first_stop(text, stops) >= 0 or (code == "block" and ends_block(i, text))
            return done

        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), prompt=tokens, stop_at_end=True,
                                     should_stop=should_stop if stops or code == "block" else None, **settings)
        eot = self.tokenizer.eot_id
        return [finish_text(prompt_text, continuation(row), stops, code, ended_at_end_of_text(row, len(tokens), eot))
                for row in out.cpu()]

    def _code_stop(self, settings: dict) -> str:
        """The code stop of a call (popped from ``settings``): the one given, else the run's
        ``model.code_stop`` (runs made before the option: off), "auto" resolved for the run's data."""
        from genforge.data.text import is_python_source

        mode = settings.pop("code_stop", None) or self.run.config.model.get("code_stop", "off")
        return resolve_code_stop(mode, is_python_source(self.run.config.data.source))

    def sample(self, n: int = 16, seed: int = 0, prompt: str | None = None, *,
               stop: str | Sequence[str] | None = None, **conditions: Any) -> list[str]:
        """``n`` generated texts (prompt included).

        A text ends at the model's end-of-text token or just before the first of the ``stop`` strings
        in its continuation, whichever comes first; generation ends once every text has ended. The
        decoding controls are max_new_tokens, temperature, top_k, top_p, min_p and repetition_penalty
        (see ``genforge.sampling.tokens``); ``code_stop`` ends Python code at top-level statement
        boundaries (``genforge.sampling.code_stops``; default: the run's ``model.code_stop``). With
        ``n == 1`` the text is exactly ``"".join(self.stream(prompt, seed, ...))`` for the same settings.
        """
        return super().sample(n, seed, prompt, stop=stop, **conditions)

    def save_samples(self, n: int, out: str | Path, seed: int = 0, prompt: str | None = None, *,
                     stop: str | Sequence[str] | None = None, on_piece: Callable[[str], None] | None = None,
                     progress: bool = True, outputs: dict[str, Any] | None = None, **conditions: Any) -> list[Path]:
        """``Model.save_samples``; for one sample, ``on_piece`` (if given) gets the text while it is generated."""
        if on_piece is None or n != 1 or any(v is not None for v in (outputs or {}).values()):
            return super().save_samples(n, out, seed, prompt, stop=stop, progress=progress, outputs=outputs,
                                        **conditions)
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
        repetition_penalty, code_stop; None: the run's default). The pieces join to
        ``self.sample(1, seed, prompt, ...)[0]`` with the same settings. A piece is shown only once it
        is final: text that could still become a stop string, a half-decoded multi-byte character
        (U+FFFD), and under a code stop the last top-level statement (a length limit would drop it)
        wait for more tokens. Settings are checked here, before the first piece.
        """
        settings = self.settings("stream", stop=stop, **decoding).given()
        stops = check_stops(settings.pop("stop", None))
        code = self._code_stop(settings)
        tokens = self._prompt_tokens(prompt)
        columns = self.family.sample_stream(1, generator=self._generator(seed), prompt=tokens, stop_at_end=True,
                                            **settings)
        return self._stream_text(columns, tokens, stops, code)

    def _stream_text(self, columns: Iterator[torch.Tensor], tokens: list[int], stops: tuple[str, ...],
                     code: str = "off") -> Iterator[str]:
        prompt_text = self.tokenizer.decode(tokens)
        if prompt_text:
            yield prompt_text
        ids, shown, text, ended = list(tokens), 0, "", False
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
                if cut >= 0 or (code == "block" and block_boundary(prompt_text + text, len(prompt_text)) >= 0):
                    ended = True
                    break
                ready = len(text) - max(held_back(text, stops), code_held_back(prompt_text + text, len(prompt_text), code))
                if ready > shown:
                    yield text[shown:ready]
                    shown = ready
        finally:
            columns.close()  # puts the model back in its mode at once, even when the caller stops early
        ended = ended or ended_at_end_of_text(ids, len(tokens), self.tokenizer.eot_id)
        text = finish_text(prompt_text, text, stops, code, ended)[len(prompt_text):]
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


def finish_text(prompt_text: str, text: str, stops: tuple[str, ...], code: str, ended: bool) -> str:
    """A sample as users get it: the prompt, then its continuation ``text`` cut before the first stop string
    and by the code stop ``code`` (``ended``: it ended at end-of-text rather than the length limit)."""
    cut = first_stop(text, stops)
    if cut >= 0:
        text, ended = text[:cut], True
    full = prompt_text + text
    return full[:code_stop_cut(full, len(prompt_text), code, ended)]

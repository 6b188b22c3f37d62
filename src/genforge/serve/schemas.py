"""The studio API's request bodies: types and static bounds here (FastAPI answers 422 naming the field);
a run's own settings (a sampler, a number of steps, a label) are checked against what the run declares,
when a request arrives (400 naming the setting)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = Union[int, float, str, bool]  # a setting's value, as the run's capabilities take it
SettingValue = Union[Scalar, list[Scalar], dict[str, Scalar], None]
MAX_COUNT = 64  # items of one studio request (the command line goes further)
MAX_TEXT = 50_000  # characters of a prompt, prefix or suffix


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _text_is_unicode(self):
        """No lone surrogates anywhere (JSON allows them, UTF-8 files and SQLite text do not)."""
        _check_text(self.model_dump())
        return self


def _check_text(value) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text holds a lone surrogate (not valid Unicode)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k)
            _check_text(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_text(v)


class GenerateRequest(Strict):
    seed: int = Field(-1, ge=-1, le=2**31 - 1, description="-1: a random seed, returned with the results")
    count: int = Field(4, ge=1, le=MAX_COUNT)
    prompt: Optional[str] = Field(None, max_length=MAX_TEXT, description="text runs: the text to continue")
    stop: Optional[list[Annotated[str, Field(min_length=1, max_length=200)]]] = Field(None, max_length=16, description="text runs: end a text before these strings")
    settings: dict[str, SettingValue] = Field(default_factory=dict, max_length=32,
                                              description="the run's sample settings (GET /api/runs/{id}: capabilities)")
    parent_id: Optional[str] = Field(None, pattern=r"^[0-9a-f]{32}$", description="the gallery item this varies")


class RefineRequest(Strict):
    mode: Literal["inpaint", "img2img", "variations", "interpolate", "attribute", "continue", "infill"]
    input_id: Optional[str] = Field(None, pattern=r"^[0-9a-f]{32}$", description="the gallery item to refine")
    other_id: Optional[str] = Field(None, pattern=r"^[0-9a-f]{32}$", description="interpolate: the second item")
    mask: Optional[str] = Field(None, max_length=12_000_000,
                                description="inpaint: a PNG (data: URL or base64) the input's size, white = generate")
    strength: Optional[float] = Field(None, ge=0, le=10)
    source: Optional[Union[int, str]] = Field(None, description="attribute: the label to move away from")
    target: Optional[Union[int, str]] = Field(None, description="attribute: the label to move towards")
    prefix: Optional[str] = Field(None, max_length=MAX_TEXT)
    suffix: Optional[str] = Field(None, max_length=MAX_TEXT)
    count: int = Field(4, ge=1, le=MAX_COUNT)
    seed: int = Field(-1, ge=-1, le=2**31 - 1)
    settings: dict[str, SettingValue] = Field(default_factory=dict, max_length=32)


class TrainRequest(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="the new run's ID (folder name)")
    family: str = Field(max_length=40)
    data: str = Field(max_length=500, description="a built-in source, or kind:PATH inside the server's --data-dir")
    steps: Optional[int] = Field(None, ge=1, le=10_000_000)
    max_minutes: Optional[float] = Field(None, gt=0, le=7 * 24 * 60)
    batch_size: Optional[int] = Field(None, ge=1, le=65_536)
    lr: Optional[float] = Field(None, gt=0, le=10)
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)
    sets: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=32,
                            description="config overrides as on the command line: section.key=value")


class ResumeRequest(Strict):
    steps: Optional[int] = Field(None, ge=1, le=10_000_000, description="the new total (default: the run's own)")
    max_minutes: Optional[float] = Field(None, gt=0, le=7 * 24 * 60)


class CompareRequest(Strict):
    runs: list[Annotated[str, Field(max_length=100)]] = Field(min_length=1, max_length=8)
    n: Optional[int] = Field(None, ge=10, le=5000, description="samples scored per image or table run")
    n_text: Optional[int] = Field(None, ge=2, le=500, description="samples scored per text run")

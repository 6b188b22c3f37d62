"""What the scorers that need no feature extractor share (text, music, tables): their scores come from the
samples themselves, so ``--features`` may only be "auto" or their own name, and a kept result is filed under
that name."""

from __future__ import annotations

from typing import ClassVar

from genforge.errors import ConfigError


class FeaturelessScorer:
    uses_features = False
    kind: ClassVar[str]  # "text", "music", "table": the name results are filed under, and what --features may say

    def __init__(self, evaluator):
        if evaluator.features_name not in ("auto", self.kind):
            raise ConfigError(f"--features applies to image runs; this is a {self.kind} run (on {evaluator.data})")
        self.evaluator = evaluator
        self.prepared = evaluator.prepared

    @classmethod
    def extractor_name(cls, features: str, run) -> str:
        return cls.kind

    def extractor_info(self) -> None:
        return None

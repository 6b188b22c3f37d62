"""Tables: ``n`` synthetic rows, decoded by the run's transform to a DataFrame, scored against the real rows
decoded the same way (``table_metrics.py``): column shapes and pair trends (quality), detection and privacy
against the training split, ML efficacy on the held-out split. The reference row scores the held-out rows
exactly like samples (its ML efficacy: the same model trained on the real training rows), so it shows what
real data gets. A run's constraints (``data.constraints``) hold in the scored rows as in sampled ones.
``figures()`` draws the scored rows against the training rows (``table_plots.py``)."""

from __future__ import annotations

import pandas as pd

from genforge.evaluate.scorers.featureless import FeaturelessScorer

EXAMPLE_ROWS = 10  # rows shown in the report's card


class TableScorer(FeaturelessScorer):
    kind = "table"
    sample_batch = 1000  # rows drawn at once

    def __init__(self, evaluator):
        super().__init__(evaluator)
        self.transform = self.prepared.tokenizer
        self.types = {c["name"]: c["type"] for c in self.transform.columns}
        # decoded once: every evaluation during training reuses them
        self.train = self.decode(self.prepared.train.rows)
        self.holdout = self.decode(self.prepared.val.rows)
        self.samples: pd.DataFrame | None = None  # the synthetic rows the latest score() drew: what figures() shows

    def decode(self, rows) -> pd.DataFrame:
        from genforge.data.table_codec import TableCodec

        return TableCodec(self.transform).decode(rows)

    def reference_info(self) -> dict:
        return {"data": self.evaluator.data, "split": "train", "n": len(self.train), "held_out": len(self.holdout),
                "entry": self.prepared.path.name}

    def score(self, family, amp_dtype) -> tuple[dict, dict, list[str]]:
        from genforge.evaluate.table_metrics import table_scores

        synth, seconds = self.draw(family, amp_dtype)
        self.samples = synth
        metrics = table_scores(synth, self.train, self.holdout, self.types, seed=self.evaluator.seed)
        sampling = {"items_per_s": self.evaluator.n / max(seconds, 1e-9), "unit": "row"}
        return metrics, sampling, [synth.head(EXAMPLE_ROWS).to_csv(index=False)]

    def draw(self, family, amp_dtype) -> tuple[pd.DataFrame, float]:
        """``n`` synthetic rows as a user gets them, and the seconds it took: with the run's constraints
        (``data.constraints``), rows built and kept as `genforge sample` does (``data/table_constraints.py``)."""
        import time

        import torch

        from genforge.data.table_constraints import constraints_from_dicts
        from genforge.families.table_conditions import draw_constrained
        from genforge.train.device import autocast

        constraints = constraints_from_dicts((self.prepared.spec.table or {}).get("constraints"))
        if not constraints:
            rows, seconds = self.evaluator.draw(family, amp_dtype, self.sample_batch)
            return self.decode(rows), seconds
        start = time.perf_counter()
        generator = torch.Generator(device=family.device).manual_seed(self.evaluator.seed * 1_000_003)

        def draw(k: int) -> pd.DataFrame:
            with autocast(family.device, amp_dtype):
                return self.decode(family.sample(k, generator=generator))

        return draw_constrained(draw, self.evaluator.n, constraints), time.perf_counter() - start

    def figures(self) -> list:
        """Column histograms and the pair-trend heat map of the latest scored rows against the training rows (the
        rows the scores compare them with)."""
        from genforge.evaluate.table_plots import table_figures

        if self.samples is None:
            raise RuntimeError("figures() draws the rows score() drew: call score() first")
        return table_figures(self.train, self.samples, self.types)

    def reference_metrics(self) -> dict | None:
        """The held-out rows scored like samples; None when there are fewer than two of them."""
        from genforge.evaluate.table_metrics import ml_efficacy, table_scores, target_column

        if len(self.holdout) < 2:
            return None
        seed = self.evaluator.seed
        metrics = table_scores(self.holdout, self.train, self.holdout, self.types, seed=seed)
        target = target_column(self.types)
        if target is not None:  # scored on themselves would be meaningless: the model trained on real rows
            metrics["ml_efficacy"] = ml_efficacy(self.train, self.holdout, self.types, target, seed)
        return metrics

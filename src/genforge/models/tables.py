"""Table runs: ``model.sample(1000, where={"diagnosis": "malignant"})`` (or ``where="diagnosis=malignant"``).

The family keeps only rows holding the asked categories (``families/table_conditions.py``); it knows each
column's category positions, not their names. Names live in the run's table transform, so this class turns
``column=value`` pairs into those positions, with one line for a column or value the table lacks.
"""

from __future__ import annotations

from typing import Any

from genforge.families.capabilities import parse_pairs
from genforge.families.table_conditions import Condition
from genforge.models.base import Model


class TableModel(Model):
    """A run on table data: samples are rows (a pandas DataFrame; ``rows.csv`` from ``save_samples``)."""

    def conditions(self, where: Any) -> list[Condition]:
        """``where`` (column=value pairs: a string "a=x,b=y", a list of them or a dict) as the family's
        conditions, in the order given (a GAN conditions its generator on the first)."""
        return [Condition(column, self.tokenizer.category_index(column, value), f"{column}={value}",
                          self.tokenizer.category_count(column))
                for column, value in parse_pairs(where)]

    def _family_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        if settings.get("where") is not None:
            settings = {**settings, "where": self.conditions(settings["where"])}
        return settings

    def sample_params(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict) -> dict:
        """settings.json records ``where`` as one "a=x,b=y" string, whatever form it was given in."""
        if conditions.get("where") is not None:
            conditions = {**conditions, "where": ",".join(f"{c}={v}" for c, v in parse_pairs(conditions["where"]))}
        return super().sample_params(n, seed, prompt, stop, conditions)

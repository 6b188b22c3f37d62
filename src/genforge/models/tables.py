"""Table runs: ``model.sample(1000, where={"diagnosis": "malignant"}, constraints=["age >= 30"])``.

The family keeps only rows holding the asked categories (``families/table_conditions.py``); it knows each
column's category positions, not their names. Names live in the run's table transform, so this class turns
``column=value`` pairs into those positions, with one line for a column or value the table lacks.

Constraints (``data/table_constraints.py``) are kept here, above every family: the run's own (``data.constraints``,
in its spec) and those asked when sampling. Each batch decodes drawn rows, builds sums, drops rows that break a
range, an inequality or a fixed combination and draws more, bounded as ``where`` is (``draw_constrained``).
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from genforge.data.table_constraints import (Constraint, Fixed, bind_constraints, check_texts,
                                             constraints_from_dicts)
from genforge.draws import step_seed
from genforge.families.capabilities import parse_pairs
from genforge.families.table_conditions import Condition, draw_constrained
from genforge.models.base import Model


class TableModel(Model):
    """A run on table data: samples are rows (a pandas DataFrame; ``rows.csv`` from ``save_samples``)."""

    def conditions(self, where: Any) -> list[Condition]:
        """``where`` (column=value pairs: a string "a=x,b=y", a list of them or a dict) as the family's
        conditions, in the order given (a GAN conditions its generator on the first)."""
        return [Condition(column, self.tokenizer.category_index(column, value), f"{column}={value}",
                          self.tokenizer.category_count(column))
                for column, value in parse_pairs(where)]

    def constraints(self, asked: Any = None) -> list[Constraint]:
        """The run's constraints (``data.constraints``, learnt when it was trained) and ``asked`` (a constraint
        string or a list of them) bound to this table; a one-line ConfigError for a bad one."""
        own = constraints_from_dicts((self.spec.table or {}).get("constraints"))
        name = "constraints (--constraint)"
        return own + bind_constraints(check_texts(asked, name), self.tokenizer.columns, given=own)

    def _family_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        if settings.get("where") is not None:
            settings = {**settings, "where": self.conditions(settings["where"])}
        return settings

    def check_sample(self, stop: Any = None, **conditions: Any) -> None:
        """``Model.check_sample``, with the asked constraints bound to this table."""
        conditions = dict(conditions)
        self.constraints(conditions.pop("constraints", None))
        super().check_sample(stop, **conditions)

    def _sample_batch(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict) -> pd.DataFrame:
        """``n`` rows meeting every constraint: rounds of decoded rows through ``Enforcement`` until ``n`` are kept.
        Round r > 0 draws with the seed ``step_seed(seed, -r)``, which no batch of the same call uses (those
        count up from 1): the same seed gives the same rows."""
        conditions = dict(conditions)
        constraints = self.constraints(conditions.pop("constraints", None))
        if not constraints:
            return super()._sample_batch(n, seed, prompt, stop, conditions)
        if stop:
            self._not_text()
        rounds = itertools.count()

        def draw(k: int) -> pd.DataFrame:
            r = next(rounds)
            return self.codec.decode(self._sample_tensors(k, step_seed(seed, -r) if r else seed, prompt, conditions)[0])

        return draw_constrained(draw, n, constraints)

    def sample_params(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict) -> dict:
        """settings.json records ``where`` as one "a=x,b=y" string, whatever form it was given in, and
        ``constraints`` as every constraint the rows meet (the run's, then those asked); checked here, before
        anything is drawn or written."""
        if conditions.get("where") is not None:
            conditions = {**conditions, "where": ",".join(f"{c}={v}" for c, v in parse_pairs(conditions["where"]))}
        constraints = self.constraints(conditions.get("constraints"))
        conditions = {k: v for k, v in conditions.items() if k != "constraints"}
        params = super().sample_params(n, seed, prompt, stop, conditions)
        return {**params, "constraints": [c.text for c in constraints]} if constraints else params

    def describe(self) -> dict[str, Any]:
        """``Model.describe`` with the run's constraints under "data" (a fixed combination: how many it keeps)."""
        about = super().describe()
        about["data"]["constraints"] = [
            {"text": c.text, "kind": c.kind, **({"combinations": len(c.combinations)} if isinstance(c, Fixed) else {})}
            for c in self.constraints()]
        return about

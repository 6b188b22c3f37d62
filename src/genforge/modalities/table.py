"""Tables: ``csv:PATH``, ``parquet:PATH`` and the built-in tables of scikit-learn and statsmodels.

Read and typed once (``data/tables.py``: inferred column types, ``data.columns`` overrides, identifiers left
out), encoded by a reversible transform (``data/table_transform.py``) into float32 rows (N, D) split into train
and validation rows; the cache entry holds them as .npy files beside the transform (tokenizer.json, the slot a
run keeps it in too). Families see ``DataSpec(modality="table", shape=(D,), table=layout)``; samples decode to
one CSV file with the table's header (``data/table_codec.py``). ``genforge eval`` scores decoded samples against
the decoded real rows (``evaluate/scorers/table.py``). ``data.constraints`` (``data/table_constraints.py``) are not
part of the cache key: they are checked on the decoded rows when the data is prepared and go into the spec
(``DataSpec.table["constraints"]``), which the run keeps.
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np

from genforge.config import DataConfig, Range
from genforge.data.cache import CorruptEntry, Entry, load_npy
from genforge.data.sources import Source
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError, DataError
from genforge.modalities.base import Modality, Prepared, ReportStyle

TRANSFORM_FILE = "tokenizer.json"  # the name a run gives it (runs.Run.tokenizer_path): one loader for both
MAX_MODES = Range(1, 100, hint="Gaussian modes per numeric column")
ONEHOT_MAX = Range(1, 100_000, hint="categories one-hot encoded; more are binary-coded")
NUMERIC = ("gmm", "quantile")
SHARED = ("source", "val_fraction")  # the data.* options every modality reads


class TableModality(Modality):
    name = "table"
    data_kind = "table"
    unit = "row"
    model_kind = "table"  # runs load as models.TableModel: sampling with where=column=value conditions
    builtin_sources = {
        "breast_cancer": "scikit-learn's Wisconsin breast cancer diagnoses: 569 rows x 31 columns (30 cell "
                         "measurements, diagnosis malignant/benign); health",
        "wine": "scikit-learn's wine recognition data: 178 rows x 14 columns (13 chemical measurements, class); "
                "food chemistry",
        "randhie": "statsmodels' RAND health insurance experiment: 20,190 rows x 10 columns (doctor visits, "
                   "coinsurance, income, health status); health economics",
        "heart": "statsmodels' Stanford heart transplant survival: 69 rows x 3 columns (survival days, censoring, "
                 "age); health",
        "grunfeld": "statsmodels' Grunfeld investment data: 220 rows x 5 columns (11 US firms, 1935-1954: "
                    "investment, value, capital); finance",
        "macrodata": "statsmodels' US macroeconomic quarters 1959-2009: 203 rows x 14 columns (GDP, consumption, "
                     "inflation, interest rates); economics",
    }
    path_forms = {
        "csv": "csv:PATH (a CSV file with a header row; .tsv tab-separated)",
        "parquet": "parquet:PATH (a Parquet file; needs pyarrow)",
    }
    scorer = "genforge.evaluate.scorers.table:TableScorer"
    default_eval_n = 1000  # synthetic rows `genforge eval` scores
    training_eval_n = 500
    report = ReportStyle(
        title="Tables",
        # dcr_median and dcr_holdout_median stay in eval.json: neither is better higher, so no column picks a best
        columns=("quality", "column_shapes", "pair_trends", "detection", "ml_efficacy", "dcr_ratio", "exact_copies"),
        lower_is_better=frozenset({"exact_copies"}),
        notes=(
            "Synthetic rows decoded to a table and compared with the real training rows; all in [0, 1], 1 best, "
            "unless marked.",
            "column_shapes: mean over columns of 1 - KS statistic (numbers, datetimes) or 1 - total variation "
            "distance (categories); pair_trends: mean over column pairs (at most 200 of each kind) of "
            "1 - |Pearson r real - r synthetic| / 2 or 1 - TV distance of the joint shares; quality: their mean "
            "(SDMetrics' quality score).",
            "detection: 1 - (2 max(AUC, 0.5) - 1) of a cross-validated logistic regression telling synthetic rows "
            "from training rows (1: no better than chance).",
            "ml_efficacy: macro-F1 on the held-out rows of a random forest trained on the synthetic rows to predict "
            "the last categorical column; in the real-data row, the same forest trained on the training rows.",
            "dcr_ratio: median distance (standardised numbers, one-hot categories) from a synthetic row to its "
            "closest training row, over the same for real held-out rows (near 1 healthy, near 0 copying; above 1 "
            "is not better); exact_copies: share of synthetic rows equal to a training row (lower is better).",
        ),
        shows="examples",
        figures=True,  # per-column histograms and the pair-trend heat map (evaluate/table_plots.py)
    )

    # ---- sources ----------------------------------------------------------------------------------
    def check_path(self, source: Source) -> None:
        if not source.path.is_file():
            raise DataError(f"data source '{source.canonical}': {source.path} is not a file; "
                            f"expected a {source.kind.upper()} file")

    def source_files(self, source: Source) -> list[Path] | None:
        return [source.path] if source.path is not None else None

    # ---- preparation ------------------------------------------------------------------------------
    def check_config(self, source: Source, cfg: DataConfig) -> None:
        from genforge.data.table_constraints import check_texts
        from genforge.data.tables import check_column_types

        defaults = DataConfig()
        for f in fields(DataConfig):  # the options of other data (image_size, tokenizer, ...) left as they are
            if f.name not in SHARED and not f.metadata and getattr(cfg, f.name) != getattr(defaults, f.name):
                raise ConfigError(f"data.{f.name} does not apply to tables; '{source.canonical}' is a table "
                                  f"(its options: data.columns, data.numeric, data.max_modes, data.onehot_max, "
                                  f"data.constraints)")
        check_column_types(cfg.columns)
        check_texts(cfg.constraints)  # their syntax, before the data is read; names are looked up in assemble
        if cfg.numeric not in NUMERIC:
            raise ConfigError(f"data.numeric must be one of: {', '.join(NUMERIC)}, got {cfg.numeric!r}")
        MAX_MODES.check("data.max_modes", cfg.max_modes, integer=True)
        ONEHOT_MAX.check("data.onehot_max", cfg.onehot_max, integer=True)

    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        params = {"val_fraction": float(cfg.val_fraction), "columns": dict(sorted(cfg.columns.items())),
                  "numeric": cfg.numeric, "onehot_max": cfg.onehot_max}
        if cfg.numeric == "gmm":
            from genforge.data.table_transform import ATOM_SHARE  # in the key: entries fitted without atoms differ

            params["max_modes"], params["atom_share"] = cfg.max_modes, ATOM_SHARE
        return params

    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        from genforge.data import tables
        from genforge.data.images import split_indices
        from genforge.data.table_transform import TableTransform

        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:  # in the manifest too: a cache hit shows them
                warnings.simplefilter("always")
                if source.path is None:
                    frame = tables.load_builtin(source.kind)
                else:
                    frame = tables.read_file(source.kind, source.path)
                table = tables.prepare_table(frame, params["columns"], source.canonical)
        finally:  # shown before any error they led to
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        # fitted on every row, so each validation value (a rare category, an extreme) has its code too
        transform = TableTransform.fit(table.frame, table.types, numeric=params["numeric"],
                                       max_modes=params.get("max_modes", 1), onehot_max=params["onehot_max"],
                                       progress=progress and params["numeric"] == "gmm")
        rows = transform.encode(table.frame)
        train_idx, val_idx = split_indices(len(rows), params["val_fraction"])
        np.save(tmp / "train_rows.npy", rows[train_idx])
        np.save(tmp / "val_rows.npy", rows[val_idx])
        transform.save(tmp / TRANSFORM_FILE)
        by_type: dict[str, list[str]] = {}
        for name, kind in table.types.items():
            by_type.setdefault(kind, []).append(name)
        return {"rows": len(rows), "sizes": {"train": len(train_idx), "val": len(val_idx)}, "width": transform.width,
                "shape": [transform.width], "columns": by_type, "identifiers": table.identifiers,
                "dropped": table.dropped,
                "warnings": [str(w.message) for w in caught if issubclass(w.category, tables.TableWarning)]}

    def read(self, path: Path, manifest: dict) -> Entry:
        try:
            transform = self.load_tokenizer(path / TRANSFORM_FILE)
        except DataError as e:
            raise CorruptEntry(str(e)) from None
        if transform.width != manifest["width"]:
            raise CorruptEntry(f"{TRANSFORM_FILE} encodes {transform.width} dims, "
                               f"the manifest says {manifest['width']}")
        arrays = {}
        for split in ("train", "val"):
            rows = load_npy(path / f"{split}_rows.npy")
            want = (manifest["sizes"][split], manifest["width"])
            if rows.dtype != np.float32 or rows.shape != want:
                raise CorruptEntry(f"{split}_rows.npy holds {rows.dtype} {rows.shape}, expected float32 {want}")
            arrays[split] = rows
        return Entry(path, manifest, arrays, transform)

    def assemble(self, entry: Entry, source: Source, cfg: DataConfig) -> Prepared:
        from genforge.data.datasets import TableDataset

        train = TableDataset(entry.arrays["train"], name=f"the training rows of {source.canonical}")
        val = TableDataset(entry.arrays["val"], name=f"the validation rows of {source.canonical}")
        layout = entry.tokenizer.layout()
        if cfg.constraints:  # in the spec: the run keeps them, and sampling and scoring read them there
            layout["constraints"] = self.learn_constraints(entry, source, cfg)
        spec = DataSpec(self.name, (entry.tokenizer.width,), table=layout)
        return Prepared(spec, train, val, entry.tokenizer, entry.manifest, entry.path)

    @staticmethod
    def learn_constraints(entry: Entry, source: Source, cfg: DataConfig) -> list[dict]:
        """data.constraints bound to the table, checked on every row (both splits, decoded as the model learns
        them: the table the user gave), fixed combinations learnt from them; plain dicts for the spec."""
        from genforge.data.table_constraints import learn_constraints

        transform = entry.tokenizer
        rows = transform.decode(np.concatenate([entry.arrays["train"], entry.arrays["val"]]))
        return learn_constraints(cfg.constraints, transform.columns, rows, source.canonical)

    # ---- runs -------------------------------------------------------------------------------------
    def load_tokenizer(self, path: Path):
        from genforge.data.table_transform import TableTransform

        return TableTransform.load(path)

    def codec(self, spec: DataSpec, tokenizer):
        from genforge.data.table_codec import TableCodec

        if tokenizer is None:
            raise DataError("table data needs its transform to be written as files; "
                            "the run's tokenizer.json is missing")
        return TableCodec(tokenizer)

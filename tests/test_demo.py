"""`genforge demo` end to end: four families and a table run trained, sampled, scored and compared in one folder."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest


def test_the_plan_shares_the_whole_budget_between_distinct_runs():
    from genforge.demo import PLAN

    assert sum(part.share for part in PLAN) == pytest.approx(1.0)
    names = [part.run_name for part in PLAN]
    assert len(set(names)) == len(names) and "table-diffusion" in names and "music" in names
    assert {part.shows for part in PLAN} == {"grid", "code", "rows", "music"}


@pytest.mark.slow
def test_demo_writes_grids_code_summary_and_report(tmp_path, monkeypatch):
    """`genforge demo` as its entry point runs it (the real plan: default models on mnist, pycode and bach, the
    classifier extractor), at the smallest budget: 20 steps a family, 10 scored images and 8 texts, 16 images
    written per family and code samples of 96 tokens. It runs in this process (``run_main``) so that what the
    command line does not expose can be made small too: scored texts of 64 tokens, the diffusion likelihood
    bound on 2 timesteps an image and the classifier extractor trained for 60 steps (the demo's defaults,
    256 tokens, 32 timesteps and 600 steps, cost minutes on a CPU and check nothing more). The table run
    prepares breast_cancer with quantile numbers rather than mixture fits (9 s for 30 columns on one core),
    and its figures show the first 4 columns (the demo's 16 panels and 31 x 31 heat map are drawn the same way,
    slower)."""
    import genforge.demo as demo
    import genforge.evaluate.evaluator as evaluator
    import genforge.evaluate.extractors as extractors
    import genforge.evaluate.scorers.music as music_scorer
    import genforge.evaluate.scorers.text as text_scorer
    import genforge.modalities.music as music_modality
    import genforge.evaluate.table_plots as table_plots
    from clitools import run_main

    monkeypatch.setattr(text_scorer, "TEXT_SAMPLE_TOKENS", 64)
    # pieces of 63 events, within the test's 64-event context (the demo's 512 fit its context of 512; past the
    # context each token recomputes the window: the scored pieces alone took 95 s)
    monkeypatch.setattr(music_modality, "SAMPLE_TOKENS", 63)
    monkeypatch.setattr(music_scorer, "SAMPLE_TOKENS", 63)
    monkeypatch.setattr(text_scorer, "MAX_VAL_TOKENS", 8192)  # bits per byte on 8k held-out tokens, not 128k
    monkeypatch.setattr(evaluator, "QUICK_LIKELIHOOD_SAMPLES", 2)
    monkeypatch.setattr(extractors, "TRAIN_STEPS", 60)  # the classifier is trained as in the demo, for fewer steps
    # each run's closing sample grid of 4 items, not 64 (the diffusion run's took 10 s: the demo writes its own
    # samples), and the image diffusion run sampled in 8 steps, not 50
    # and the code run on characters: learning the demo's BPE of pycode's 9 MB takes 15 s (BPE has its own tests)
    def small(part):
        extra = ["data.numeric=quantile"] if part.shows == "rows" else []
        if part.shows == "music":  # 3 chorales (music21 reads one in 0.6 s), windows of 64 events
            extra += ["data.pieces=3", "data.block_size=64", "train.batch_size=8"]
        if part.family == "diffusion" and part.shows != "rows":
            extra.append("model.sample_steps=8")
        kept = tuple(o for o in part.overrides if not o.startswith(("data.tokenizer=", "data.vocab_size=")))
        return replace(part, overrides=(*kept, "train.grid_size=4", *extra))

    monkeypatch.setattr(demo, "PLAN", tuple(small(part) for part in demo.PLAN))
    monkeypatch.setattr(table_plots, "MAX_COLUMNS", 4)
    monkeypatch.setattr(table_plots, "MAX_MATRIX_COLUMNS", 4)
    out = tmp_path / "demo"
    proc = run_main("demo", "--out", out, "--minutes", "0.1", "--eval-n", "10", "--eval-n-text", "8", "--samples", "16",
                    "--code-tokens", "96", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"summary: {out / 'summary.md'}" in proc.stdout
    summary = (out / "summary.md").read_text()
    for name in ("diffusion", "gan", "vae", "transformer", "table-diffusion", "music"):
        assert name in summary
        assert (out / "runs" / name / "model.safetensors").is_file()
    for family in ("diffusion", "gan", "vae"):
        assert (out / f"{family}.png").stat().st_size > 1000
    code = (out / "code_samples.txt").read_text()
    assert len(code) > 200
    # every run scored, side by side in one self-contained page with the real-data reference rows
    report = (out / "report.html").read_text()
    assert report.count("real data (held-out)") >= 3  # the image table, the text table and the table table
    assert report.count('class="grid"') >= 3 and "http://" not in report and "https://" not in report
    # the table run: 1,000 rows written, its scores, and its column histograms and heat map in its card
    assert len((out / "samples" / "table-diffusion" / "rows.csv").read_text().splitlines()) == 1001
    assert "Tables: 10 samples" in report and report.count('<img class="figure"') == 2
    table_result = json.loads((out / "runs" / "table-diffusion" / "eval.json").read_text())["results"]["table/n=10"]
    for figure in table_result["figures"]:
        assert (out / "runs" / "table-diffusion" / figure["file"]).is_file()
        assert f"](runs/table-diffusion/{figure['file']})" in summary  # shown in summary.md too
    assert "quality " in summary and "```csv" in summary
    for family in ("diffusion", "gan", "vae"):
        assert json.loads((out / "runs" / family / "eval.json").read_text())["results"]["classifier/n=10"]["n"] == 10
    assert json.loads((out / "runs" / "transformer" / "eval.json").read_text())["results"]["text/n=8"]["n"] == 8
    assert "FD " in summary and "bits/byte" in summary and "report.html" in summary
    # the music run: pieces to hear and look at, in the summary and in its card of the report
    assert (out / "music.wav").stat().st_size > 1000 and (out / "music.png").stat().st_size > 100
    assert "bits/event" in summary and "](music.wav)" in summary and "![music](music.png)" in summary
    assert report.count("<audio controls") == 1 and "Music: 8 samples" in report
    # a second demo into the same folder needs --overwrite (refused before any training)
    again = run_main("demo", "--out", out, "--minutes", "0.1", "--quiet")
    assert again.returncode == 1 and "--overwrite" in again.stderr

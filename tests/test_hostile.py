"""Hostile and mistaken input across every command: each gets one `error:` line, a non-zero exit, no
traceback, and leaves every existing file exactly as it was.

The commands run in this process through ``genforge.cli.main`` (what the `genforge` script calls), so the
table stays cheap; tests/test_hardening.py drives the real process for kills, locks and full disks.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from clitools import run_main
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_TRAIN = ["train.sample_every=0", "train.log_every=1"]


def tiny_run(family: str, data: str, out: Path, *overrides: str) -> None:
    import genforge

    genforge.train(family, data, out, steps=2, progress=False, overrides=[*TINY_TRAIN, *overrides])


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the run lock's bookkeeping file aside)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    """A workspace: three tiny trained runs, damaged copies of one, and inputs good and bad."""
    root = tmp_path_factory.mktemp("hostile")
    text = root / "corpus.py"
    text.write_text("def add(a, b):\n    return a + b\n\n" * 30, encoding="utf-8")
    paths = {"root": root, "text": text}
    paths["vae"] = root / "vae"
    tiny_run("vae", "digits", paths["vae"], "model.latent_dim=4", "model.width=8")
    paths["diff"] = root / "diff"
    tiny_run("diffusion", "digits", paths["diff"], "model.base_channels=8", "model.channel_mults=[1]",
             "model.attention_resolutions=[]")
    paths["gpt"] = root / "gpt"
    tiny_run("transformer", f"text:{text}", paths["gpt"], "data.block_size=16", "model.n_layer=1", "model.n_embd=16",
             "model.n_head=2")

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(root / "digit.png")
    Image.fromarray(np.full((5, 5), 255, dtype=np.uint8)).save(root / "small_mask.png")
    (root / "not_an_image.png").write_text("this is text, not a PNG")
    (root / "taken.txt").write_text("a file a user cares about\n")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4 + b"\x00" * 64)
    (root / "empty.txt").write_text("")
    (root / "empty_dir").mkdir()
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "notes.txt").write_text("hello\n")

    def damaged(name: str, file: str, content: bytes | None) -> None:
        shutil.copytree(paths["vae"], root / name)
        target = root / name / file
        if content is None:
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        else:
            target.write_bytes(content)
        paths[name] = root / name

    damaged("cut_weights", "model.safetensors", None)
    damaged("cut_state", "trainer_state.safetensors", None)
    damaged("bad_yaml", "config.yaml", b"family: [unclosed\n  - : :\n")
    damaged("evil_yaml", "config.yaml", b"!!python/object/apply:os.system ['echo pwned > pwned.txt']\n")
    damaged("bad_spec", "spec.json", b"{not json")
    damaged("pickle_weights", "model.safetensors", b"\x80\x04\x95" + b"cos\nsystem\n" * 4)
    return paths


# (id, arguments with {placeholders} from the workspace, exit code, a fragment of the error line)
CASES = [
    # train
    ("train-unknown-family", ["train", "--family", "nosuch", "--data", "digits", "--out", "{root}/new1"], 1, "nosuch"),
    ("train-unknown-source", ["train", "--family", "vae", "--data", "nosuch", "--out", "{root}/new2"], 1, "nosuch"),
    ("train-missing-folder", ["train", "--family", "vae", "--data", "folder:{root}/absent", "--out", "{root}/new3"], 1, "absent"),
    ("train-over-a-run", ["train", "--family", "vae", "--data", "digits", "--out", "{vae}"], 1, "already holds a run"),
    ("train-out-is-a-file", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/taken.txt"], 1, "is a file"),
    ("train-zero-steps", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new4", "--steps", "0"], 1, "train.steps"),
    ("train-negative-ckpt", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new5",
                             "--set", "train.ckpt_every=-1"], 1, "train.ckpt_every"),
    ("train-negative-ckpt-minutes", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new5",
                                     "--set", "train.ckpt_minutes=-3"], 1, "train.ckpt_minutes"),
    ("train-text-for-a-number", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new6",
                                 "--set", "train.lr=fast"], 1, "train.lr"),
    ("train-unknown-option", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new7",
                              "--set", "train.speed=11"], 1, "speed"),
    ("train-set-without-equals", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new8",
                                  "--set", "train.steps"], 1, "section.key=value"),
    ("train-huge-model", ["train", "--family", "transformer", "--data", "text:{text}", "--out", "{root}/new9",
                          "--set", "model.n_embd=100000", "--set", "data.block_size=16"], 1, "parameters"),
    ("train-huge-batch", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new10",
                          "--batch-size", "1000000000000"], 1, "batch_size"),
    ("train-negative-width", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new11",
                              "--set", "model.width=-8"], 1, "width"),
    ("train-huge-image-size", ["train", "--family", "vae", "--data", "folder:{root}/empty_dir", "--out", "{root}/new12",
                               "--image-size", "100000"], 1, "image_size"),
    ("train-ema-out-of-range", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new13",
                                "--set", "train.ema_decay=1.5"], 1, "train.ema_decay"),
    ("train-wrong-modality", ["train", "--family", "transformer", "--data", "digits", "--out", "{root}/new14"], 1, "image"),
    ("train-unknown-device", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new15",
                              "--device", "tpu"], 1, "tpu"),
    ("train-empty-text", ["train", "--family", "transformer", "--data", "text:{root}/empty.txt", "--out", "{root}/new16"], 1, "empty"),
    ("train-binary-text", ["train", "--family", "transformer", "--data", "text:{root}/binary.bin", "--out", "{root}/new17"], 1, "binary"),
    ("train-empty-folder", ["train", "--family", "vae", "--data", "folder:{root}/empty_dir", "--out", "{root}/new18"], 1, "empty_dir"),
    ("train-steps-not-a-number", ["train", "--family", "vae", "--data", "digits", "--out", "{root}/new19",
                                  "--steps", "many"], 2, "--steps"),
    ("resume-not-a-run", ["train", "--out", "{root}/not_a_run", "--resume"], 1, "config.yaml is missing"),
    ("resume-missing", ["train", "--out", "{root}/absent_run", "--resume"], 1, "does not exist"),
    ("resume-cut-state", ["train", "--out", "{cut_state}", "--resume", "--steps", "4"], 1, "corrupt or truncated"),
    ("resume-as-other-family", ["train", "--family", "gan", "--out", "{vae}", "--resume"], 1, "'vae' run"),
    ("resume-evil-yaml", ["train", "--out", "{evil_yaml}", "--resume"], 1, "unreadable config.yaml"),
    # sample
    ("sample-missing-run", ["sample", "{root}/absent_run"], 1, "does not exist"),
    ("sample-not-a-run", ["sample", "{root}/not_a_run"], 1, "not a genforge run"),
    ("sample-zero", ["sample", "{vae}", "-n", "0", "--out", "{root}/s1"], 1, "number of samples"),
    ("sample-a-trillion", ["sample", "{vae}", "-n", "1000000000000", "--out", "{root}/s2"], 1, "999,999"),
    ("sample-out-is-a-file", ["sample", "{vae}", "-n", "2", "--out", "{root}/taken.txt"], 1, "existing file"),
    ("sample-prompt-for-images", ["sample", "{vae}", "--prompt", "hi", "--out", "{root}/s3"], 1, "text runs"),
    ("sample-stop-for-images", ["sample", "{vae}", "--stop", "x", "--out", "{root}/s4"], 1, "text runs"),
    ("sample-zero-diffusion-steps", ["sample", "{diff}", "-n", "1", "--steps", "0", "--out", "{root}/s5"], 1, "steps"),
    ("sample-unknown-sampler", ["sample", "{diff}", "-n", "1", "--sampler", "magic", "--out", "{root}/s6"], 1, "magic"),
    ("sample-label-out-of-range", ["sample", "{diff}", "-n", "1", "--steps", "2", "--label", "99",
                                   "--out", "{root}/s7"], 1, "99"),
    ("sample-negative-temperature", ["sample", "{gpt}", "-n", "2", "--temperature", "-1", "--out", "{root}/s8"], 1, "temperature"),
    ("sample-top-p-above-one", ["sample", "{gpt}", "-n", "2", "--top-p", "2", "--out", "{root}/s9"], 1, "top_p"),
    ("sample-cut-weights", ["sample", "{cut_weights}", "--out", "{root}/s10"], 1, "corrupt or truncated"),
    ("sample-pickle-as-weights", ["sample", "{pickle_weights}", "--out", "{root}/s11"], 1, "corrupt or truncated"),
    ("sample-bad-yaml", ["sample", "{bad_yaml}", "--out", "{root}/s12"], 1, "unreadable config.yaml"),
    ("sample-evil-yaml", ["sample", "{evil_yaml}", "--out", "{root}/s13"], 1, "unreadable config.yaml"),
    ("sample-unknown-device", ["sample", "{vae}", "--device", "tpu", "--out", "{root}/s14"], 1, "tpu"),
    # refine
    ("refine-nothing", ["refine", "{diff}"], 1, "--input"),
    ("refine-missing-input", ["refine", "{diff}", "--input", "{root}/absent.png", "--strength", "0.5"], 1, "does not exist"),
    ("refine-input-not-an-image", ["refine", "{diff}", "--input", "{root}/not_an_image.png", "--strength", "0.5"], 1, "cannot be read"),
    ("refine-mask-other-size", ["refine", "{diff}", "--input", "{root}/digit.png", "--mask", "{root}/small_mask.png",
                                "--out", "{root}/r1"], 1, "5x5"),
    ("refine-strength-above-one", ["refine", "{diff}", "--input", "{root}/digit.png", "--strength", "1.5",
                                   "--out", "{root}/r2"], 1, "strength"),
    ("refine-mask-and-strength-missing", ["refine", "{diff}", "--input", "{root}/digit.png"], 1, "--mask"),
    ("refine-out-is-a-file", ["refine", "{diff}", "--input", "{root}/digit.png", "--strength", "0.5", "--steps", "2",
                              "-n", "1", "--out", "{root}/taken.txt"], 1, "existing file"),
    ("refine-mask-on-a-vae", ["refine", "{vae}", "--input", "{root}/digit.png", "--mask", "{root}/digit.png"], 1, "diffusion"),
    ("refine-zero-variations", ["refine", "{vae}", "--input", "{root}/digit.png", "-n", "0", "--out", "{root}/r3"], 1, "variations"),
    ("refine-a-million-variations", ["refine", "{vae}", "--input", "{root}/digit.png", "-n", "1000000",
                                     "--out", "{root}/r4"], 1, "1,024"),
    ("refine-infill-without-fim", ["refine", "{gpt}", "--prefix-file", "{text}", "--suffix-file", "{text}"], 1, "fim"),
    ("refine-missing-prefix", ["refine", "{gpt}", "--prefix-file", "{root}/absent.py"], 1, "does not exist"),
    ("refine-image-on-text", ["refine", "{gpt}", "--input", "{root}/digit.png", "--strength", "0.5"], 1, "image runs"),
    # eval
    ("eval-missing-run", ["eval", "{root}/absent_run"], 1, "does not exist"),
    ("eval-one-sample", ["eval", "{vae}", "--n", "1"], 1, "n"),
    ("eval-unknown-features", ["eval", "{vae}", "--n", "10", "--features", "vibes"], 1, "vibes"),
    ("eval-dinov2-without-weights", ["eval", "{vae}", "--n", "10", "--features", "dinov2",
                                     "--weights", "{root}/absent_weights"], 1, "absent_weights"),
    ("eval-cut-weights", ["eval", "{cut_weights}", "--n", "10"], 1, "corrupt or truncated"),
    # compare
    ("compare-missing-run", ["compare", "{vae}", "{root}/absent_run", "--out", "{root}/report.html"], 1, "does not exist"),
    ("compare-out-is-a-folder", ["compare", "{vae}", "--out", "{root}/empty_dir", "--n", "10"], 1, "empty_dir"),
    ("compare-no-runs", ["compare"], 2, "Missing argument"),
    ("compare-unknown-features", ["compare", "{vae}", "--features", "vibes", "--n", "10", "--out", "{root}/r.html"], 1, "vibes"),
    # info
    ("info-json-missing-run", ["info", "{root}/absent_run", "--json"], 1, "does not exist"),
    ("info-missing-run", ["info", "{root}/absent_run"], 1, "does not exist"),
    ("info-not-a-run", ["info", "{root}/not_a_run"], 1, "not a genforge run"),
    ("info-bad-spec", ["info", "{bad_spec}"], 1, "unreadable"),
    ("info-no-such-command", ["infos", "{vae}"], 2, "No such command"),
    # data
    ("data-unknown-source", ["data", "prepare", "nosuch"], 1, "nosuch"),
    ("data-huge-image-size", ["data", "prepare", "folder:{root}/empty_dir", "--image-size", "100000"], 1, "1024"),
    ("data-two-channels", ["data", "prepare", "folder:{root}/empty_dir", "--channels", "2"], 1, "channels"),
    ("data-tiny-vocab", ["data", "prepare", "text:{text}", "--tokenizer", "bpe", "--vocab-size", "10"], 1, "vocab_size"),
    ("data-missing-text", ["data", "prepare", "text:{root}/absent.txt"], 1, "absent.txt"),
    ("data-vocab-without-bpe", ["data", "prepare", "text:{text}", "--vocab-size", "500"], 1, "--tokenizer bpe"),
]


def test_the_table_is_large_and_covers_every_command():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert {"train", "sample", "refine", "eval", "compare", "info", "data"} <= commands | {"info"}


@pytest.mark.parametrize("name,args,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gets_one_line_and_changes_nothing(ws, name, args, code, fragment):
    root = ws["root"]
    before = snapshot(root)
    argv = [a.format(**{k: str(v) for k, v in ws.items()}) for a in args]
    proc = run_main(*argv)
    exit_code, out, err = proc.returncode, proc.stdout, proc.stderr
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_code == code, (exit_code, out[-500:], err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert fragment in errors[0], errors[0]
    after = snapshot(root)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, changed
    assert not (Path.cwd() / "pwned.txt").exists() and not (root / "pwned.txt").exists()

"""What several test modules share: prompts for the tiny model, user task files, the data
folder rule, the bubblewrap mark, the quiet run and the in-process command line. The
fixtures built from them live in conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from traitmap.testing import MICRO_STUDY

REPO = Path(__file__).resolve().parents[1]

# Prompts in the tiny model's words (traitmap.testing.CORPUS), for the backend tests.
TINY_PROMPTS = [
    "Question: Janet has 3 apples.\nAnswer:\n",
    "The movie was great, I loved it. The product is bad, it broke in a day.\nSentiment:\n",
    "Is it?\n",
    "def add(a, b): return a + b\nassert add(1, 2) == 3\nAnswer:\n",
    "entailment contradiction premise hypothesis\n",
]

# A user's own tasks; their rows are copied from IMDB and GSM8K (see rows and write_jsonl).
REVIEWS_TASK = '''name = "reviews"
description = "Movie reviews, positive or negative (rows copied from IMDB)."
tags = ["sentiment"]
kind = "choice"
metric = "accuracy"

[data]
path = "reviews"
splits = { train = "train.jsonl", test = "test.jsonl" }
id_field = "id"

[prompt]
instruction = "What is the sentiment of the below sentence?"
input = "{text}"
cue = "Sentiment"
max_input_chars = 200

[choice]
label_field = "label"
values = [0, 1]
verbalizers = ["negative", "positive"]
'''

SUMS_TASK = '''name = "sums"
description = "Grade-school math word problems (rows copied from GSM8K)."
tags = ["math"]
kind = "generate"
metric = "exact_match"

[data]
path = "sums"
splits = { train = "train.jsonl", test = "test.jsonl" }

[prompt]
input = "{question}"
answer = "{answer}"
max_input_chars = 300

[generate]
parser = "final_number"
gold = "{answer}"
parse_gold = true
max_new_tokens = 8
stop = ["\\n\\n"]
'''


def data_dir_or_none() -> Path | None:
    """The real data folder: TRAITMAP_DATA_DIR, else ../shared/data beside the checkout."""
    folder = Path(os.environ.get("TRAITMAP_DATA_DIR", REPO.parent / "shared" / "data"))
    return folder if folder.is_dir() else None


def require_data_dir() -> Path:
    """The real data folder. Without it a test is skipped, except in CI (CI=true), where it
    fails: a checkout without data must not pass while testing little."""
    folder = data_dir_or_none()
    if folder is None:
        reason = "real data dir not found: set TRAITMAP_DATA_DIR (CI uses ../shared/data)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return folder


# Skipped only where bubblewrap is not installed (CI installs it): an installed bwrap that
# does not work here is a failure to see, not a reason to skip.
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bwrap is not installed (the Debian package bubblewrap)")


@contextmanager
def torch_threads(count: int):
    """Tiny tensors gain nothing from threads, and on a busy machine 2 threads ran ~30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_config(folder: Path, model: Path | str, text: str = MICRO_STUDY):
    """The study `text` (the micro study by default) on `model`, written to folder/micro.toml and loaded."""
    from traitmap.config import load

    path = folder / "micro.toml"
    path.write_text(text.format(model=model))
    return load(path)


def run_study(config, out: Path, data_dir: Path, steps: tuple[str, ...] = ("train", "evaluate"), **options):
    """run.run_study, quiet (no events shown)."""
    from traitmap import run

    return run.run_study(config, out, data_dir, steps=steps, **options)


def copy_of(out: Path, tmp_path: Path) -> Path:
    """A writable copy of a finished study's folder, to change without touching the shared one."""
    return Path(shutil.copytree(out, tmp_path / "copy"))


def assert_same_records(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every field equal; log-probabilities to 1e-5, since a resumed cell shares its batches
    with other cells than before and fp32 sums then round differently in the last bits."""
    key = ["model", "task", "example_id"]
    got, want = (frame.sort_values(key).reset_index(drop=True) for frame in (got, want))
    pd.testing.assert_frame_equal(got.drop(columns="logprobs"), want.drop(columns="logprobs"))
    for a, b in zip(got["logprobs"], want["logprobs"]):
        a, b = json.loads(a or "{}"), json.loads(b or "{}")
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-5 for k in a)


def traitmap(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`traitmap ARGS` in this process through cli.entrypoint, the installed command's path
    (error handling included): (exit code, stdout, stderr)."""
    from traitmap import cli

    monkeypatch.setattr(sys, "argv", ["traitmap", *map(str, args)])
    try:
        cli.entrypoint()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(path: Path, n: int, start: int = 0) -> list[dict]:
    """Rows start .. start+n of a JSONL file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(start + n), handle)][start:]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path

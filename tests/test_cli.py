"""The command line through its real entry point: tasks, a bad study file (one line, exit 2), the dry run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import traitmap

from traitmap import cli, tasks
from traitmap.errors import TraitmapError

STUDY = '''name = "micro"
base_model = "{model}"
sources = ["flipkart", "gsm8k"]
targets = ["imdb", "gsm8k", "goat"]

[train]
steps = 2
'''


def test_tasks_list_names_the_builtin_tasks(monkeypatch, capsys):
    code, out, _ = traitmap(monkeypatch, capsys, "tasks", "list")
    assert code == 0
    for name in ("gsm8k", "imdb", "goat", "flipkart"):
        assert name in out


def test_tasks_show_prints_the_rendered_prompt(monkeypatch, capsys, data_dir):
    code, out, _ = traitmap(monkeypatch, capsys, "tasks", "show", "imdb", "--data-dir", data_dir)
    example = tasks.get("imdb").examples("test", data_dir, limit=1, seed=0)[0]
    assert code == 0
    assert example.prompt.startswith("What is the sentiment of the below sentence?\n")
    assert example.prompt.rstrip("\n") in out  # verbatim: not re-wrapped to the terminal width
    assert "choices: ['negative', 'positive']" in out and f"gold: {example.gold}" in out


def test_an_unknown_task_is_one_error_line(monkeypatch, capsys):
    code, out, err = traitmap(monkeypatch, capsys, "tasks", "show", "nosuchtask")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "nosuchtask" in err and "Traceback" not in err


def test_a_bad_study_file_is_one_line_naming_the_field(tmp_path, tiny_model_dir):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(model=tiny_model_dir) + 'preset = "gpu"\n')
    done = subprocess.run([sys.executable, "-m", "traitmap.cli", "run", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line even when longer than the 80 columns of a pipe
    assert "field 'train.preset'" in lines[0] and "line 8" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(monkeypatch, capsys, tmp_path, tiny_model_dir, data_dir):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(model=tiny_model_dir))
    code, out, _ = traitmap(monkeypatch, capsys, "run", path, "--dry-run", "--data-dir", data_dir, "--out", tmp_path / "out")
    assert code == 0
    assert "train adapters" in out and "evaluate cells" in out
    assert "sources: flipkart, gsm8k" in out and "targets: imdb, gsm8k, goat" in out
    rows = {cells[1].strip(): [c.strip() for c in cells[2:5]]
            for cells in (line.split("│") for line in out.splitlines()) if len(cells) >= 5}
    assert rows["train adapters"] == ["2", "0", "2"]  # total, done, to do
    assert rows["evaluate cells"] == ["9", "0", "9"]
    assert not (tmp_path / "out").exists()


def test_backend_args_are_read_as_toml_scalars():
    assert cli.parse_backend_args(["max_loras=8", "gpu_memory_utilization = 0.9", "eager=true", "dtype=bfloat16",
                                   'name="a b"', "seed=2024-01-01", "empty="]) == {
        "max_loras": 8, "gpu_memory_utilization": 0.9, "eager": True, "dtype": "bfloat16", "name": "a b",
        "seed": "2024-01-01", "empty": ""}
    assert cli.parse_backend_args(["mode=a=b"]) == {"mode": "a=b"}


@pytest.mark.parametrize("pair, message", [("max_loras", "not KEY=VALUE"), ("=8", "not KEY=VALUE"),
                                           ("sizes=[1, 2]", "one number, true/false or text")])
def test_a_backend_arg_that_is_not_one_scalar_is_refused(pair, message):
    with pytest.raises(TraitmapError, match=message) as caught:
        cli.parse_backend_args([pair])
    assert caught.value.field == "--backend-arg"


def test_an_unknown_backend_arg_fails_before_anything_is_written(monkeypatch, capsys, tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(model="some/model") + "[eval]\nbackend_args = {max_loras = 8}\n")
    code, out, err = traitmap(monkeypatch, capsys, "run", path, "--backend-arg", "eager=true", "--data-dir", tmp_path,
                              "--out", tmp_path / "out")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{path}, line 9, field 'eval.backend_args.max_loras': the 'hf' backend takes no argument" in err
    assert not (tmp_path / "out").exists()
    path.write_text(STUDY.format(model="some/model"))
    code, _, err = traitmap(monkeypatch, capsys, "run", path, "--backend-arg", "eager=true", "--data-dir", tmp_path,
                            "--out", tmp_path / "out")
    assert code == 2 and "field 'eval.backend_args.eager'" in err and not (tmp_path / "out").exists()


def test_tasks_list_is_one_line_per_task_at_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = traitmap(monkeypatch, capsys, "tasks", "list")
    lines = out.rstrip("\n").splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 80
    assert len(lines) == len(tasks.names()) + 2  # the header and its rule


def test_tasks_show_says_how_many_rows_it_checked(monkeypatch, capsys, data_dir):
    code, out, _ = traitmap(monkeypatch, capsys, "tasks", "show", "imdb", "--data-dir", data_dir)
    n = sum(1 for line in open(data_dir / "imdb" / "test.jsonl", encoding="utf-8") if line.strip())
    assert code == 0 and f"checked {n:,} rows of the test split" in out


STANDARD = Path(__file__).resolve().parents[1] / "results" / "standard"


def test_predict_reads_the_published_export_and_leads_with_its_check(monkeypatch, capsys, data_dir, tmp_path):
    """results/standard has no store: the matrix and analysis/source_features.csv are enough."""
    builtin = Path(tasks.__file__).parent / "builtin" / "imdb.toml"
    mine = tmp_path / "critiques.toml"
    mine.write_text(builtin.read_text().replace('name = "imdb"', 'name = "critiques"'))
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = traitmap(monkeypatch, capsys, "predict", STANDARD, mine)
    assert code == 0, err
    assert out.startswith("Leave-one-source-out check over 10 sources: the model ")
    assert "points" in out and "no better than mean" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    values = [float(v.replace("−", "-")) for v in re.findall(r"[+−]\d+\.\d", out)]
    assert values and max(abs(v) for v in values) <= 100


def test_predict_gives_the_measured_gains_of_a_source_already_trained(monkeypatch, capsys):
    code, out, _ = traitmap(monkeypatch, capsys, "predict", STANDARD, "goat")
    measured = pd.read_csv(STANDARD / "gains.csv", index_col=0).loc["goat", "tweeteval_offensive"] * 100
    assert code == 0 and "already a source of this study" in out
    assert f"tweeteval_offensive: {measured:+.1f} points".replace("-", "−") in out

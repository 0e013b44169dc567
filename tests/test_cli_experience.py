"""`traitmap init`, the dry run's time estimate, `traitmap status` and `traitmap compare`.

No model runs here: output directories are built directly with the store, the way
`traitmap.run` fills them (config.json from `prepare_out_dir`, adapters, cells, runs).
"""

from __future__ import annotations

import json
import random
import re
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from helpers import traitmap
from typer.testing import CliRunner

from traitmap import cli
from traitmap.compare import compare_studies
from traitmap.config import EVAL_KEYS, PRESETS, RUN_KEYS, load, parse, resolve_data_dir
from traitmap.durations import duration
from traitmap.estimate import AUTO_STEPS_SHARE, DEFAULT_SPEEDS, VALIDATION_COST, estimate_plan
from traitmap.metrics import CellMetrics
from traitmap.status import study_status
from traitmap.plan import make_plan
from traitmap.run import prepare_out_dir

runner = CliRunner()
TARGETS = ["imdb", "flipkart", "gsm8k"]


def invoke(*args: str):
    result = runner.invoke(cli.app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def entry(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`traitmap ...` through cli.entrypoint: (exit code, all it printed on one line; Rich wraps at 80 columns here)."""
    code, out, err = traitmap(monkeypatch, capsys, *args)
    return code, " ".join((out + err).split())


def record(model: str, seed: int, task: str, i: int, correct: bool) -> dict:
    return {"model": model, "seed": seed, "task": task, "example_id": f"{task}-{i}", "prompt": "p", "output": "o",
            "output_tokens": 3, "parsed": "o", "gold": "o", "correct": float(correct), "logprobs": ""}


def fake_study(out_dir: Path, scores: dict[str, dict[str, float]], *, base_model: str = "smollm2-135m",
               sources: list[str] | None = None, targets: list[str] = TARGETS, n: int = 20,
               finished: bool = True, train_log: dict | None = None, cell_seconds: float = 2.0) -> Path:
    """An output dir whose cells hold `scores` (model -> task -> score; a missing one is not done).

    Adapters named in `scores` are trained (a folder with adapter_config.json); the run
    is finished unless `finished=False` (a killed run).
    """
    sources = sources or [m for m in scores if m != "base"]
    config = parse({"name": out_dir.name, "base_model": base_model, "sources": sources, "targets": targets,
                              "eval": {"examples": n}})
    store = prepare_out_dir(config, out_dir, None)
    run_id = store.start_run("2025-01-01T10:00:00+00:00", "train evaluate analyze report", config.to_dict(), {}, {})
    for name in scores:
        if name == "base":
            continue
        path = out_dir / "adapters" / name / "seed0"
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text("{}")
        log = train_log or {"steps": 16, "examples": 64, "tokens": 6000, "seconds": 50.0}
        store.add_adapter(name, 0, name, None, path, log, "2025-01-01T10:05:00+00:00")
    for model, row in scores.items():
        for task, score in row.items():
            hits = round(score * n)
            records = [record(model, -1 if model == "base" else 0, task, i, i < hits) for i in range(n)]
            store.add_cell(model, -1 if model == "base" else 0, task, records, cell_seconds, "2025-01-01T10:10:00+00:00",
                           CellMetrics(hits / n, {"accuracy": hits / n}))
    if finished:
        store.finish_run(run_id, "2025-01-01T10:20:00+00:00", 1200.0)
    store.close()
    return out_dir


FULL = {
    "base": {"imdb": 0.50, "flipkart": 0.40, "gsm8k": 0.10},
    "imdb": {"imdb": 0.80, "flipkart": 0.55, "gsm8k": 0.05},
    "flipkart": {"imdb": 0.60, "flipkart": 0.90, "gsm8k": 0.10},
}


# ------------------------------------------------------------------------------------ init

def test_init_writes_a_study_that_validates(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_tasks").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out = entry(monkeypatch, capsys, "init", "studies/mine.toml", "--model", "gemma3-270m",
                      "--sources", "imdb, flipkart", "--targets", "imdb,gsm8k", "--data-dir", "/data",
                      "--task-dir", "my_tasks")
    assert code == 0, out
    path = tmp_path / "studies" / "mine.toml"
    config = load(path)
    assert config.name == "mine" and config.base_model == "gemma3-270m"
    assert [s.name for s in config.sources] == ["imdb", "flipkart"] and config.targets == ["imdb", "gsm8k"]
    assert config.data_dir == "/data"
    # task_dirs are relative to the study file: ../my_tasks from studies/
    assert [Path(d).resolve() for d in config.task_dirs] == [(tmp_path / "my_tasks").resolve()]
    text = path.read_text()
    for key in ("base_model", "seeds", "sources", "targets", "task_dirs", "data_dir", "preset", "steps", "epochs",
                "examples", "batch_size", "grad_accum", "max_length", "lr", "limits", "max_new_tokens",
                "mislabel", "balance", "imbalance", "subsample", "truncate", "smollm2-135m", "Hugging Face id"):
        assert key in text, key


def test_init_comments_show_every_option_and_each_example_is_valid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out = entry(monkeypatch, capsys, "init")
    assert code == 0, out
    text = (tmp_path / "study.toml").read_text()
    base = load(tmp_path / "study.toml")
    raw = tomllib.loads(text)
    # Every commented `key = value` under [train] / [eval] / [run] / [analysis], uncommented alone, is valid.
    table, seen = None, {"train": set(), "eval": {"examples", "batch_size"}, "run": set(), "analysis": set()}
    for line in text.splitlines():
        header = re.match(r"#? ?\[(\w+)\]", line)
        if header:
            table = header.group(1)
            continue
        found = re.match(r"# (\w+) = (.+?)(\s{2,}#.*)?$", line)
        if table and found:
            key, value = found.group(1), tomllib.loads(f"v = {found.group(2)}")["v"]
            changed = {**raw, table: {**raw.get(table, {}), key: value}}
            parse(changed)
            seen[table].add(key)
    assert seen["train"] == set(PRESETS["cpu"]), set(PRESETS["cpu"]) ^ seen["train"]
    assert seen["eval"] == EVAL_KEYS
    assert seen["run"] == RUN_KEYS
    assert seen["analysis"] == {"n_components", "pca_on", "standardize"}
    # The five variant examples, as a sources list, are valid.
    variants = [line.split("#", 2)[1].strip() for line in text.splitlines() if line.startswith("#   {")]
    assert len(variants) == 5
    sources = tomllib.loads(f"s = [{', '.join(variants)}]")["s"]
    parsed = parse({**raw, "sources": sources})
    assert [s.variant["kind"] for s in parsed.sources] == ["mislabel", "balance", "imbalance", "subsample", "truncate"]
    assert base.train.preset == "cpu" and base.eval.examples == 40


def test_init_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    path = tmp_path / "study.toml"
    path.write_text("mine")
    code, out = entry(monkeypatch, capsys, "init", str(path))
    assert code == 2
    assert "already exists" in out and out.count("error:") == 1
    assert path.read_text() == "mine"


def test_init_names_a_study_file_with_a_space_as_a_shell_reads_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out = entry(monkeypatch, capsys, "init", "my study.toml")
    assert code == 0 and "next: traitmap run 'my study.toml' --dry-run" in out
    assert "`traitmap run 'my study.toml'`" in (tmp_path / "my study.toml").read_text()
    assert load(tmp_path / "my study.toml").name == "my-study"


def test_init_warns_about_unknown_tasks(tmp_path, monkeypatch, capsys):
    code, out = entry(monkeypatch, capsys, "init", str(tmp_path / "s.toml"), "--sources", "my_reviews", "--targets", "imdb")
    assert code == 0
    assert "'my_reviews' is not a known task yet" in out
    load(tmp_path / "s.toml")


# ------------------------------------------------------------------------- dry run estimate

def own_task(tmp_path: Path) -> tuple[Path, Path]:
    """The tutorial's example: a JSONL dataset with text/label fields and its task file."""
    tasks_dir, data = tmp_path / "my_tasks", tmp_path / "data" / "complaints"
    tasks_dir.mkdir()
    data.mkdir(parents=True)
    (tasks_dir / "complaints.toml").write_text(
        'name = "complaints"\ndescription = "Customer messages: complaint or not."\ntags = ["classification"]\n'
        'kind = "choice"\nmetric = "accuracy"\n[data]\npath = "complaints"\n'
        'splits = { train = "train.jsonl", test = "test.jsonl" }\nid_field = "id"\n'
        '[prompt]\ninstruction = "Is the following customer message a complaint?"\ninput = "{text}"\ncue = "Complaint"\n'
        '[choice]\nlabel_field = "label"\nvalues = [0, 1]\nverbalizers = ["no", "yes"]\n')
    rng = random.Random(0)
    for split, n in (("train", 40), ("test", 30)):
        rows = [{"id": f"{split}-{i}", "text": " ".join(rng.choice(["late", "broken", "great", "thanks"]) for _ in range(12)),
                 "label": i % 2} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tasks_dir, tmp_path / "data"


def test_dry_run_prints_counts_and_an_estimate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAITMAP_CACHE", str(tmp_path / "cache"))  # no tokenizer on disk: characters / 4
    monkeypatch.delenv("TRAITMAP_DATA_DIR", raising=False)
    own_task(tmp_path)
    study = tmp_path / "s.toml"
    code, out = entry(monkeypatch, capsys, "init", str(study), "--sources", "complaints", "--targets", "complaints",
                      "--task-dir", str(tmp_path / "my_tasks"), "--data-dir", str(tmp_path / "data"))
    assert code == 0, out
    code, out = entry(monkeypatch, capsys, "run", str(study), "--dry-run", "--out", str(tmp_path / "out"))
    assert code == 0, out
    assert "train adapters" in out and "evaluate cells" in out
    assert "Estimated time" in out and "estimated time:" in out and "estimate from default speeds" in out
    assert "characters / 4" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_estimate_counts_tokens_and_uses_default_speeds(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITMAP_CACHE", str(tmp_path / "cache"))
    tasks_dir, data = own_task(tmp_path)
    config = parse({"name": "s", "base_model": "smollm2-135m", "sources": ["complaints"], "targets": ["complaints"],
                              "task_dirs": [str(tasks_dir)], "train": {"steps": 10, "batch_size": 2}, "eval": {"examples": 30}})
    est = estimate_plan(config, make_plan(config), data)
    train, score = est.rows
    assert (train.units_total, train.units_todo, score.units_total, score.units_todo) == (1, 1, 2, 2)
    assert 10 * 2 * 10 < train.tokens_per_unit < 10 * 2 * 192  # real lengths, under the max_length bound
    assert train.seconds_per_unit == pytest.approx(train.tokens_per_unit / DEFAULT_SPEEDS["train"])
    assert score.seconds_per_unit == pytest.approx(score.tokens_per_unit / DEFAULT_SPEEDS["score"])  # yes/no: one pass per example
    assert est.seconds_todo == pytest.approx(train.seconds_per_unit + 2 * score.seconds_per_unit)


def test_the_auto_steps_share_is_what_the_published_adapters_trained():
    """AUTO_STEPS_SHARE is a measurement: the mean of steps trained / max_steps over the
    adapters of results/; a re-published study must update it."""
    shares = []
    for study in ("standard", "controlled"):
        folder = Path(__file__).resolve().parents[1] / "results" / study
        max_steps = json.loads((folder / "config.json").read_text())["config"]["train"]["max_steps"]
        shares += list(pd.read_csv(folder / "adapters.csv")["steps_trained"] / max_steps)
    assert AUTO_STEPS_SHARE == round(sum(shares) / len(shares), 2)


def test_an_auto_steps_estimate_counts_the_usual_share_of_max_steps_and_names_the_upper_bound(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITMAP_CACHE", str(tmp_path / "cache"))
    tasks_dir, data = own_task(tmp_path)
    study = {"name": "s", "base_model": "smollm2-135m", "sources": ["complaints"], "targets": ["complaints"],
             "task_dirs": [str(tasks_dir)], "eval": {"examples": 30}}
    fixed = parse({**study, "train": {"steps": 20, "batch_size": 2, "validation_examples": 8, "eval_every": 5}})
    auto = parse({**study, "train": {"steps": "auto", "max_steps": 20, "batch_size": 2, "validation_examples": 8,
                                     "eval_every": 5}})
    fixed_estimate = estimate_plan(fixed, make_plan(fixed), data)
    fixed_row = fixed_estimate.rows[0]
    estimate = estimate_plan(auto, make_plan(auto), data)
    auto_row = estimate.rows[0]
    share = round(20 * AUTO_STEPS_SHARE) / 20
    per_step = fixed_row.tokens_per_unit / (20 * 2 + 5 * 8 * VALIDATION_COST)
    assert auto_row.tokens_per_unit == pytest.approx(per_step * (20 * share * 2 + (int(20 * share) // 5 + 1) * 8 * VALIDATION_COST))
    assert estimate.notes[0].startswith(f'steps = "auto": each adapter is counted at {AUTO_STEPS_SHARE:.0%} of max_steps = 20')
    assert "at most" in estimate.notes[0]
    # The bound is the study with every adapter at max_steps: as the same study with steps = 20.
    assert estimate.notes[0].endswith(f"at most {duration(fixed_estimate.seconds_todo, days=True)}")


def test_estimate_prefers_the_speeds_measured_in_the_out_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITMAP_CACHE", str(tmp_path / "cache"))
    tasks_dir, data = own_task(tmp_path)
    out = fake_study(tmp_path / "out", {"base": {"complaints": 0.5}}, sources=["complaints", "imdb"],
                     targets=["complaints"], n=30, cell_seconds=3.0)
    # one adapter trained at 6000 tokens / 50 s = 120 tok/s -> use a different speed to see it used
    from traitmap.store import Store

    store = Store(out / "traitmap.sqlite")
    path = out / "adapters" / "imdb" / "seed0"
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    store.add_adapter("imdb", 0, "imdb", None, path, {"tokens": 5000, "seconds": 100.0}, "t")
    config = parse({"name": "out", "base_model": "smollm2-135m", "sources": ["complaints", "imdb"],
                              "targets": ["complaints"], "task_dirs": [str(tasks_dir)], "eval": {"examples": 30}})
    plan = make_plan(config, store)
    est = estimate_plan(config, plan, data, store)
    store.close()
    rows = {(r.step, r.item): r for r in est.rows}
    train = rows[("train", "complaints")]
    assert train.basis == "measured" and train.seconds_per_unit == pytest.approx(train.tokens_per_unit / 50)
    cell = rows[("eval", "complaints")]
    assert cell.basis == "measured" and cell.seconds_per_unit == pytest.approx(3.0)  # 3 s per 30-example cell
    assert (cell.units_total, cell.units_todo) == (3, 2)
    assert "measured" in est.speed_source


# ---------------------------------------------------------------------------------- status

def test_status_of_a_killed_study(tmp_path):
    partial = {"base": {"imdb": 0.5, "flipkart": 0.4, "gsm8k": 0.1}, "imdb": {"imdb": 0.8}}
    out = fake_study(tmp_path / "partial", partial, sources=["imdb", "flipkart"], finished=False)
    st = study_status(out)
    assert (st.adapters_done, st.adapters_total) == (1, 2)
    assert st.adapters_todo == [("flipkart", 0)]
    assert (st.cells_done, st.cells_total) == (4, 9)
    assert st.matrix.loc["imdb", "imdb"] == pytest.approx(0.8)
    assert st.matrix.loc["imdb", ["flipkart", "gsm8k"]].isna().all() and st.matrix.loc["flipkart"].isna().all()
    assert st.last_run["finished"] is None and st.report is None and not st.complete
    result = invoke("status", str(out))
    assert result.exit_code == 0, result.output
    assert "adapters trained │    1 │     2 │    1" in result.output
    assert "cells evaluated  │    4 │     9 │    5" in result.output
    assert "NaN" in result.output and "never finished" in result.output and "not built yet" in result.output


def test_status_of_a_finished_study(tmp_path):
    out = fake_study(tmp_path / "done", FULL)
    (out / "report").mkdir()
    (out / "report" / "index.html").write_text("<html></html>")
    st = study_status(out)
    assert st.complete and (st.cells_done, st.cells_total) == (9, 9) and st.report is not None
    assert st.last_run["seconds"] == 1200.0 and st.seconds_spent == pytest.approx(2 * 50 + 9 * 2)
    result = invoke("status", str(out))
    assert result.exit_code == 0 and "complete" in result.output and "index.html" in result.output


def test_status_of_a_study_killed_during_its_analyses_is_not_complete(tmp_path):
    out = fake_study(tmp_path / "analyses", FULL, finished=False)  # every cell done, the run never finished
    st = study_status(out)
    assert st.work_done and not st.complete and st.running is None
    result = invoke("status", str(out))
    assert result.exit_code == 0 and "complete" not in result.output.replace("incomplete", "")
    assert "did not finish its analyses and report" in " ".join(result.output.split())


def test_status_of_a_running_study_says_so(tmp_path):
    from traitmap.store import StudyLock

    out = fake_study(tmp_path / "running", FULL, finished=False)
    lock = StudyLock(out)
    try:
        assert study_status(out).running is not None
        assert "running (pid" in invoke("status", str(out)).output
    finally:
        lock.release()


def test_status_of_a_folder_that_is_not_a_study(tmp_path, monkeypatch, capsys):
    code, out = entry(monkeypatch, capsys, "status", str(tmp_path))
    assert code == 2 and "not a traitmap output directory" in out


# --------------------------------------------------------------------------------- compare

def test_compare_aligns_two_studies(tmp_path):
    other = {
        "base": {"imdb": 0.60, "flipkart": 0.50, "mnli": 0.3},
        "imdb": {"imdb": 0.95, "flipkart": 0.55, "mnli": 0.3},
        "flipkart": {"imdb": 0.65, "flipkart": 0.70, "mnli": 0.3},
        "goat": {"imdb": 0.60, "flipkart": 0.50, "mnli": 0.3},
    }
    a = fake_study(tmp_path / "small", FULL)
    b = fake_study(tmp_path / "large", other, base_model="gemma3-270m", targets=["imdb", "flipkart", "mnli"])
    c = compare_studies(a, b)
    assert c.models == ["base", "imdb", "flipkart"] and c.targets == ["imdb", "flipkart"]
    assert c.only_a == {"models": [], "targets": ["gsm8k"]} and c.only_b == {"models": ["goat"], "targets": ["mnli"]}
    assert c.diff.loc["imdb", "imdb"] == pytest.approx(0.15)
    assert c.gains_a.loc["imdb", "imdb"] == pytest.approx(0.30) and c.gains_b.loc["imdb", "imdb"] == pytest.approx(0.35)
    summary = c.summary().set_index("target")
    # imdb: A gains (0.30 + 0.10) / 2 = 0.20, B (0.35 + 0.05) / 2 = 0.20: a tie
    assert summary.loc["imdb", "gains_more"] == "tie"
    # flipkart: A (0.15 + 0.50) / 2 = 0.325, B (0.05 + 0.20) / 2 = 0.125: A gains more
    assert summary.loc["flipkart", "gains_more"] == "small"
    assert summary.loc["flipkart", "difference"] == pytest.approx(-0.2)


def test_compare_command_and_csv(tmp_path):
    a = fake_study(tmp_path / "small", FULL)
    better = {m: {t: min(1.0, s + (0.1 if m != "base" else 0.0)) for t, s in row.items()} for m, row in FULL.items()}
    b = fake_study(tmp_path / "large", better, base_model="gemma3-270m")
    csv = tmp_path / "cmp.csv"
    result = invoke("compare", str(a), str(b), "--csv", str(csv))
    assert result.exit_code == 0, result.output
    for text in ("Scores: A / B", "Difference: B - A", "Gains over its base model", "large's adapters gain more"):
        assert text in result.output, text
    frame = pd.read_csv(csv)
    assert len(frame) == 3 * 3 and set(frame.columns) >= {"model", "target", "score_a", "score_b", "diff", "gain_a", "gain_b"}
    row = frame[(frame.model == "imdb") & (frame.target == "imdb")].iloc[0]
    assert row.score_a == pytest.approx(0.8) and row.score_b == pytest.approx(0.9) and row["diff"] == pytest.approx(0.1)
    assert frame[frame.model == "base"]["gain_a"].isna().all()


def test_compare_refuses_studies_with_nothing_in_common(tmp_path, monkeypatch, capsys):
    a = fake_study(tmp_path / "a", FULL)
    b = fake_study(tmp_path / "b", {"base": {"mnli": 0.3}, "goat": {"mnli": 0.3}}, targets=["mnli"])
    code, out = entry(monkeypatch, capsys, "compare", str(a), str(b))
    assert code == 2 and "share no adapter" in out


def test_init_writes_a_relative_data_dir_as_the_study_file_reads_it(tmp_path, monkeypatch, capsys):
    """data_dir is relative to the study file, like task_dirs: from studies/, ./data is ../data."""
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out = entry(monkeypatch, capsys, "init", "studies/mine.toml", "--data-dir", "data")
    assert code == 0, out
    assert 'data_dir = "../data"' in (tmp_path / "studies" / "mine.toml").read_text()
    monkeypatch.chdir(tmp_path / "studies")  # wherever traitmap runs from
    monkeypatch.delenv("TRAITMAP_DATA_DIR", raising=False)
    config = load(tmp_path / "studies" / "mine.toml")
    assert resolve_data_dir(config) == (tmp_path / "data").resolve()

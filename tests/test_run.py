"""A micro study on the tiny model and real tasks: results, resume, refusals, broken adapters, kills."""

import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import assert_same_records, copy_of, make_config, run_study

from traitmap import metrics
from traitmap import plan as study_plan
from traitmap.errors import TraitmapError
from traitmap.results import Study
from traitmap.testing import MICRO_SOURCES, MICRO_STUDY, MICRO_TARGETS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fail(*args, **kwargs):
    raise AssertionError("finished work was recomputed")


def test_plan_lists_every_adapter_and_cell(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, MICRO_STUDY.replace('targets', 'seeds = [0, 1]\ntargets'))
    plan = study_plan.make_plan(config)
    assert plan.adapters == [("flipkart", 0), ("flipkart", 1), ("gsm8k", 0), ("gsm8k", 1)]
    assert plan.cells[:3] == [("base", -1, t) for t in MICRO_TARGETS]
    assert len(plan.cells) == 3 + 4 * 3 and plan.todo_cells == plan.cells
    assert study_plan.model_names(config) == ["base", "flipkart", "gsm8k"]


def test_micro_study_writes_its_results(micro_study):
    config, out = micro_study
    for name in ("matrix.csv", "gains.csv", "config.json", study_plan.DB_FILE):
        assert (out / name).is_file(), name
    matrix = pd.read_csv(out / "matrix.csv", index_col=0)
    assert list(matrix.index) == ["base", *MICRO_SOURCES] and list(matrix.columns) == MICRO_TARGETS
    assert matrix.notna().all().all()
    gains = pd.read_csv(out / "gains.csv", index_col=0)
    assert list(gains.index) == MICRO_SOURCES
    assert gains.to_numpy() == pytest.approx((matrix.loc[MICRO_SOURCES] - matrix.loc["base"]).to_numpy(), abs=1e-5)
    assert json.loads((out / "config.json").read_text())["config"]["name"] == "micro"
    for source in MICRO_SOURCES:
        assert (out / "adapters" / source / "seed0" / "adapter_config.json").is_file()
    assert not list(out.rglob("*.tmp"))


def test_every_cell_holds_the_same_examples(micro_study):
    _, out = micro_study
    records = Study.load(out).records()
    assert len(records) == 9 * 4
    by_cell = records.groupby(["model", "task"])["example_id"].apply(tuple)
    for task in MICRO_TARGETS:
        assert len({by_cell[(model, task)] for model in ["base", *MICRO_SOURCES]}) == 1
    generated = records[records["task"].isin(["gsm8k", "goat"])]
    assert generated["output_tokens"].max() <= 6  # the [eval] max_new_tokens table is used


def test_adapters_are_really_evaluated(micro_study):
    """An adapter's scores differ from the base model's: no silent fall-back to the base."""
    _, out = micro_study
    records = Study.load(out).records(task="imdb")
    scores = {m: records[records["model"] == m]["logprobs"].map(json.loads).tolist() for m in ["base", *MICRO_SOURCES]}
    assert scores["base"] != scores["flipkart"] and scores["flipkart"] != scores["gsm8k"]


def test_rerun_recomputes_nothing(micro_study, data_dir, tmp_path, monkeypatch):
    config, out = micro_study
    out = copy_of(out, tmp_path)
    before = (out / "matrix.csv").read_text()
    monkeypatch.setattr("traitmap.executors.local.run_train_job", fail)
    monkeypatch.setattr("traitmap.executors.local.run_eval_job", fail)
    run_study(config, out, data_dir)
    assert (out / "matrix.csv").read_text() == before
    assert len(Study.load(out).runs) == 2


def test_a_new_target_evaluates_only_its_cells(micro_study, data_dir, tmp_path, tiny_model_dir, monkeypatch):
    from traitmap import jobs

    _, out = micro_study
    out = copy_of(out, tmp_path)
    config = make_config(tmp_path, tiny_model_dir, MICRO_STUDY.replace('"goat"]', '"goat", "tweeteval_offensive"]'))
    calls = []

    def recorded(job, *args):
        calls.append((job.task.name, [model for model, _, _ in job.cells]))
        return jobs.run_eval_job(job, *args)

    monkeypatch.setattr("traitmap.executors.local.run_train_job", fail)
    monkeypatch.setattr("traitmap.executors.local.run_eval_job", recorded)
    run_study(config, out, data_dir)
    assert calls == [("tweeteval_offensive", ["base", *MICRO_SOURCES])]
    assert list(Study.load(out).matrix.columns) == [*MICRO_TARGETS, "tweeteval_offensive"]


@pytest.mark.parametrize("change, field", [
    (("steps = 2", "steps = 3"), "train"),
    (("examples = 4", "examples = 5"), "eval"),
    (('sources = ["flipkart", "gsm8k"]', 'sources = [{{task = "gsm8k", name = "flipkart"}}]'), "sources"),
])
def test_changed_settings_in_the_same_out_dir_are_refused(micro_study, data_dir, tmp_path, tiny_model_dir, change,
                                                          field):
    _, out = micro_study
    out = copy_of(out, tmp_path)
    saved = (out / "config.json").read_text()
    config = make_config(tmp_path, tiny_model_dir, MICRO_STUDY.replace(*change))
    with pytest.raises(TraitmapError) as caught:
        run_study(config, out, data_dir)
    assert caught.value.field == field and "config.json" in str(caught.value)
    assert (out / "config.json").read_text() == saved


def break_adapter(folder: Path, how: str) -> None:
    weights = folder / "adapter_model.safetensors"
    if how == "garbage":
        weights.write_bytes(b"not safetensors")
    elif how == "missing":
        weights.unlink()
    elif how == "no_lora_weights":  # a valid file that holds none of the adapter's weights
        from safetensors.torch import save_file

        save_file({"unrelated": torch.zeros(1)}, weights)


@pytest.mark.parametrize("how", ["garbage", "missing", "no_lora_weights"])
def test_a_broken_adapter_is_an_error_never_the_base_model(micro_study, data_dir, tmp_path, how):
    config, out = micro_study
    out = copy_of(out, tmp_path)
    with sqlite3.connect(out / study_plan.DB_FILE) as db:
        db.execute("DELETE FROM cells WHERE model = 'flipkart'")
    break_adapter(out / "adapters" / "flipkart" / "seed0", how)
    with pytest.raises(TraitmapError, match="flipkart"):
        run_study(config, out, data_dir, steps=("evaluate",))
    assert "flipkart" not in set(Study.load(out).cells["model"])


def test_a_damaged_adapter_is_named_before_anything_is_written_and_retrain_replaces_it(
        micro_study, data_dir, tmp_path, monkeypatch):
    from traitmap import jobs

    config, out = micro_study
    out = copy_of(out, tmp_path)
    before = {name: (out / name).read_bytes() for name in ("config.json", "matrix.csv")}
    kept = (out / "adapters" / "gsm8k" / "seed0" / "adapter_model.safetensors").read_bytes()
    weights = out / "adapters" / "flipkart" / "seed0" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(TraitmapError) as caught:
        run_study(config, out, data_dir)
    assert caught.value.file == weights and "--retrain flipkart" in str(caught.value)
    assert (out / "config.json").read_bytes() == before["config.json"]

    trained, evaluated = [], []

    def train(job, *args):
        trained.append(job.name)
        return jobs.run_train_job(job, *args)

    def evaluate(job, *args):
        evaluated.append((job.task.name, [model for model, _, _ in job.cells]))
        return jobs.run_eval_job(job, *args)

    monkeypatch.setattr("traitmap.executors.local.run_train_job", train)
    monkeypatch.setattr("traitmap.executors.local.run_eval_job", evaluate)
    run_study(config, out, data_dir, retrain=("flipkart",))
    assert trained == ["flipkart"] and evaluated == [(target, ["flipkart"]) for target in MICRO_TARGETS]
    assert (out / "matrix.csv").read_bytes() == before["matrix.csv"]  # the same seed trains the same adapter
    assert (out / "adapters" / "gsm8k" / "seed0" / "adapter_model.safetensors").read_bytes() == kept
    with pytest.raises(TraitmapError, match="not a source"):
        run_study(config, out, data_dir, steps=("train", "evaluate", "analyze", "report"), retrain=("imdb",))


def test_the_driver_reports_progress_as_events_and_prints_nothing(micro_study, data_dir, tmp_path, capsys):
    from traitmap.events import RunEvents

    class Recorder(RunEvents):
        def __init__(self):
            self.seen = []

        def training(self, jobs):
            self.seen.append(("training", [job.name for job in jobs]))

        def step(self, job, step, steps, loss):
            self.seen.append(("step", job.name))

        def trained(self, job, log):
            self.seen.append(("trained", job.name, log["steps"]))

        def evaluating(self, jobs, cells):
            self.seen.append(("evaluating", cells))

        def scored(self, cell, metric, score):
            self.seen.append(("scored", cell.model, cell.task))

        def done(self):
            self.seen.append(("done",))

    config, out = micro_study
    out, events = copy_of(out, tmp_path), Recorder()
    run_study(config, out, data_dir, retrain=("flipkart",), events=events)
    steps = events.seen.count(("step", "flipkart"))
    assert steps > 0 and events.seen == ([("training", ["flipkart"])] + [("step", "flipkart")] * steps
                                         + [("trained", "flipkart", steps), ("done",), ("evaluating", len(MICRO_TARGETS))]
                                         + [("scored", "flipkart", target) for target in MICRO_TARGETS] + [("done",)])
    assert capsys.readouterr().out == ""


def test_evaluating_before_training_is_refused(tmp_path, tiny_model_dir, data_dir):
    config = make_config(tmp_path, tiny_model_dir)
    with pytest.raises(TraitmapError, match="not trained yet"):
        run_study(config, tmp_path / "out", data_dir, steps=("evaluate",))


def test_a_killed_study_keeps_finished_cells_and_resumes_to_the_same_matrix(
        micro_study, tiny_model_dir, data_dir, tmp_path, monkeypatch):
    from traitmap import jobs

    config, complete = micro_study
    cells = []

    def killed_on_third_cell(*args):
        for cell in jobs.run_eval_job(*args):
            cells.append(cell)
            if len(cells) == 3:
                raise KeyboardInterrupt
            yield cell

    monkeypatch.setattr("traitmap.executors.local.run_eval_job", killed_on_third_cell)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, tmp_path / "killed", data_dir)
    partial = Study.load(tmp_path / "killed")
    assert len(partial.cells) == 2 and len(partial.records()) == 2 * 4
    assert partial.matrix.notna().sum().sum() == 2

    # Resume from another place: the output dir was moved (finished adapters must still count).
    moved = Path(shutil.move(tmp_path / "killed", tmp_path / "moved"))
    monkeypatch.setattr("traitmap.executors.local.run_eval_job", jobs.run_eval_job)
    monkeypatch.setattr("traitmap.executors.local.run_train_job", fail)
    run_study(config, moved, data_dir)
    resumed, reference = Study.load(moved), Study.load(complete)
    pd.testing.assert_frame_equal(resumed.matrix, reference.matrix)
    assert_same_records(resumed.records(), reference.records())


def test_every_cell_stores_its_tasks_metrics(micro_study):
    study = Study.load(micro_study[1])
    cells, records = study.cells.set_index(["model", "task"]), study.records()
    for (model, task), cell in records.groupby(["model", "task"]):
        stored = cells.loc[(model, task)]
        assert stored["score"] == cell["correct"].mean()
        if task == "imdb":
            assert stored["accuracy"] == stored["score"]
            assert stored["balanced_accuracy"] == metrics.balanced_accuracy(cell["parsed"], cell["gold"])
            assert stored["macro_f1"] == metrics.macro_f1(cell["parsed"], cell["gold"], ["negative", "positive"])
        else:
            assert stored[list(metrics.CHOICE_METRICS)].isna().all()
    own = study.cell_metrics().set_index(["model", "task", "metric"])["value"]
    assert own[("base", "gsm8k", "exact_match")] == cells.loc[("base", "gsm8k"), "score"]
    rates = study.answer_rates()
    assert set(rates["task"]) == {"imdb"} and rates.groupby("model")["rate"].sum().round(12).eq(1).all()
    answered = records[records["task"] == "imdb"].groupby("model")["parsed"].value_counts(normalize=True)
    for row in rates[rates["label"] != ""].itertuples():
        assert row.rate == answered.get((row.model, row.label), 0.0) and row.gold_rate == 0.5  # 2 of each label
    with pytest.raises(TraitmapError, match="balanced_accuracy"):
        study.matrix_in("f1")


def test_a_store_from_before_cell_metrics_gets_them_when_opened(micro_study, tmp_path):
    _, out = micro_study
    out = copy_of(out, tmp_path)
    original = Study.load(micro_study[1])
    want, want_rates = original.cells, original.answer_rates()
    with sqlite3.connect(out / study_plan.DB_FILE) as db:
        db.execute("DROP TABLE cell_metrics")
        db.execute("DROP TABLE answer_rates")
        records = db.execute("SELECT * FROM records ORDER BY rowid").fetchall()
    study = Study.load(out)
    pd.testing.assert_frame_equal(study.cells, want)
    pd.testing.assert_frame_equal(study.answer_rates(), want_rates)
    assert set(study.cell_metrics()[["model", "seed", "task"]].itertuples(index=False, name=None)) == study.done_cells()
    with sqlite3.connect(out / study_plan.DB_FILE) as db:
        assert db.execute("SELECT * FROM records ORDER BY rowid").fetchall() == records
    pd.testing.assert_frame_equal(study.matrix_in("balanced_accuracy"), original.matrix_in("balanced_accuracy"))


def test_the_matrix_in_balanced_accuracy_scores_an_always_majority_adapter_at_chance(
        micro_study, data_dir, tmp_path, tiny_model_dir):
    from traitmap import analysis, tasks
    from traitmap.store import Store

    _, out = micro_study
    out = copy_of(out, tmp_path)
    text = MICRO_STUDY.replace('"goat"]', '"goat", "flipkart"]') + '\n[analysis]\nmetric = "balanced_accuracy"\n'
    run_study(make_config(tmp_path, tiny_model_dir, text), out, data_dir, steps=("evaluate",))
    study = Study.load(out)
    assert json.loads((out / "config.json").read_text())["matrix_metric"] == "balanced_accuracy"
    written = pd.read_csv(out / "matrix.csv", index_col="model")
    pd.testing.assert_frame_equal(written, study.matrix_in("balanced_accuracy"), check_names=False,
                                  check_dtype=False, atol=1e-6)
    pd.testing.assert_frame_equal(study.matrix[["gsm8k", "goat"]], study.matrix_in("accuracy")[["gsm8k", "goat"]])
    analysis.run_all(study, only=["uncertainty"])  # its intervals are around the matrix's own numbers
    intervals = pd.read_csv(out / "analysis" / "matrix_ci.csv").set_index(["model", "task"])["score"]
    assert intervals.to_dict() == pytest.approx(study.matrix.stack().to_dict(), abs=1e-12)

    # plant an adapter that always answers the majority label
    store, task = Store(out / study_plan.DB_FILE), tasks.get("flipkart")
    cell = store.records(task="flipkart", model="gsm8k").to_dict("records")
    golds = [r["gold"] for r in cell]
    label = max(task.choices, key=golds.count)
    always = [{**r, "output": label, "parsed": label, "correct": float(r["gold"] == label)} for r in cell]
    store.add_cell("gsm8k", 0, "flipkart", always, 1.0, "t", task.cell_metrics(always))
    store.close()
    assert golds.count(label) / len(golds) > 1 / len(task.choices)  # 4 examples of 3 labels: 2, 1, 1
    assert Study.load(out).matrix.loc["gsm8k", "flipkart"] == 1 / len(task.choices)
    assert Study.load(out).matrix_in("accuracy").loc["gsm8k", "flipkart"] == golds.count(label) / len(golds)


COUNTING_ENGINE = '''
from traitmap.backends.hf import HFBackend


class CountingBackend(HFBackend):
    """The hf engine under another name, counting the requests it answers under its tag."""

    answered = {}

    def __init__(self, model_dir, *, batch_size=16, tag):
        super().__init__(model_dir, batch_size=batch_size)
        self.tag = tag

    def answer(self, requests, progress=None):
        CountingBackend.answered[self.tag] = CountingBackend.answered.get(self.tag, 0) + len(requests)
        yield from super().answer(requests, progress)
'''


def test_an_engine_from_an_installed_package_runs_the_study(micro_study, tmp_path, tiny_model_dir, data_dir,
                                                            install_package):
    install_package("traitmap_counting", COUNTING_ENGINE,
                    {"traitmap.backends": {"counting": "traitmap_counting:CountingBackend"}})
    text = MICRO_STUDY.replace("batch_size = 4\n", 'batch_size = 4\nbackend = "counting"\nbackend_args = {{tag = "micro"}}\n')
    run_study(make_config(tmp_path, tiny_model_dir, text), tmp_path / "out", data_dir)

    import traitmap_counting

    through_it, through_hf = Study.load(tmp_path / "out"), Study.load(micro_study[1])
    assert traitmap_counting.CountingBackend.answered == {"micro": len(through_it.records())} != {"micro": 0}
    assert through_it.config.eval.backend_args == {"tag": "micro"}
    pd.testing.assert_frame_equal(through_it.matrix, through_hf.matrix)

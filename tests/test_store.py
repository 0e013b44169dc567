"""The SQLite store: a cell is whole or absent; one writer at a time."""

import math
import os

import pytest

from traitmap import tasks
from traitmap.record import RECORD_FIELDS
from traitmap.store import Store


def record(model="base", task="imdb", i=0, correct=1.0):
    return {"model": model, "seed": -1 if model == "base" else 0, "task": task, "example_id": f"{task}-{i}",
            "prompt": "p", "output": "positive", "output_tokens": 1, "parsed": "positive", "gold": "positive",
            "correct": correct, "logprobs": "{}"}


def add_cell(store, model, seed, task, records, seconds):
    """A cell scored by its task, as the runner stores it."""
    return store.add_cell(model, seed, task, records, seconds, "t", tasks.get(task).cell_metrics(records))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    yield s
    s.close()


def test_add_cell_writes_records_and_score(store):
    add_cell(store, "base", -1, "imdb", [record(i=0, correct=1.0), record(i=1, correct=0.0)], 1.5)
    assert store.done_cells() == {("base", -1, "imdb")}
    cells = store.cells()
    assert cells.loc[0, "n"] == 2 and cells.loc[0, "score"] == 0.5
    assert tuple(store.records().columns) == RECORD_FIELDS
    assert store.records()["example_id"].tolist() == ["imdb-0", "imdb-1"]


def test_a_cell_stores_its_tasks_metrics_and_answer_rates_with_its_records(store):
    always_positive = [record(i=i) for i in range(3)] + [{**record(i=3, correct=0.0), "gold": "negative"}]
    add_cell(store, "base", -1, "imdb", always_positive, 1.0)
    values = store.cell_metrics().set_index("metric")["value"]
    assert store.cells().loc[0, "score"] == values["accuracy"] == 0.75
    assert values["balanced_accuracy"] == 0.5 and values["macro_f1"] == (6 / 7 + 0) / 2
    assert store.answer_rates().set_index("label")["rate"].to_dict() == {"negative": 0.0, "positive": 1.0, "": 0.0}
    assert store.cells_without_metrics() == []


def test_a_generate_cell_stores_its_own_metric_only(store):
    add_cell(store, "base", -1, "gsm8k", [record(task="gsm8k", i=0), record(task="gsm8k", i=1, correct=0.0)], 1.0)
    assert store.cell_metrics()[["metric", "value"]].values.tolist() == [["exact_match", 0.5]]
    assert store.answer_rates().empty


def test_failure_mid_cell_writes_nothing(store):
    broken = [record(i=0), {"model": "base"}]  # the second record lacks columns: fails mid-insert
    with pytest.raises(KeyError):
        add_cell(store, "base", -1, "imdb", broken, 1.0)
    assert store.done_cells() == set()
    assert store.records().empty and store.cell_metrics().empty and store.answer_rates().empty


def test_failure_when_redoing_a_cell_keeps_the_old_one(store):
    add_cell(store, "base", -1, "imdb", [record(i=0), record(i=1)], 1.0)
    with pytest.raises(KeyError):
        add_cell(store, "base", -1, "imdb", [record(i=5), {"model": "base"}], 1.0)
    assert store.records()["example_id"].tolist() == ["imdb-0", "imdb-1"]
    assert store.cells()["n"].tolist() == [2]


def test_a_committed_cell_survives_reopening(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    add_cell(s, "base", -1, "imdb", [record()], 1.0)
    s.close()
    again = Store(tmp_path / "db.sqlite")
    assert again.done_cells() == {("base", -1, "imdb")}
    again.close()


def test_records_filter_by_task_and_model(store):
    add_cell(store, "base", -1, "imdb", [record("base", "imdb", 0)], 1.0)
    add_cell(store, "base", -1, "goat", [record("base", "goat", 0), record("base", "goat", 1)], 1.0)
    add_cell(store, "fk", 0, "goat", [record("fk", "goat", 0)], 1.0)
    assert len(store.records()) == 4
    assert set(store.records(task="goat")["model"]) == {"base", "fk"}
    assert store.records(model="fk")["task"].tolist() == ["goat"]
    assert len(store.records(task="goat", model="base")) == 2
    assert store.records(task="imdb", model="fk").empty


def test_adapter_done_needs_the_adapter_on_disk(store, tmp_path):
    folder = tmp_path / "adapter"
    store.add_adapter("fk", 0, "flipkart", None, folder, {"steps": 1}, "t")
    assert not store.adapter_done("fk", 0)
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    assert store.adapter_done("fk", 0) and not store.adapter_done("fk", 1)
    assert store.adapters()["name"].tolist() == ["fk"]


def test_a_moved_study_folder_keeps_its_adapters(tmp_path):
    s = Store(tmp_path / "a" / "db.sqlite")
    folder = tmp_path / "a" / "adapters" / "fk"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    s.add_adapter("fk", 0, "flipkart", None, folder, {}, "t")
    s.close()
    (tmp_path / "a").rename(tmp_path / "b")
    moved = Store(tmp_path / "b" / "db.sqlite")
    assert moved.adapter_done("fk", 0)
    assert moved.adapters()["path"].tolist() == [str(tmp_path / "b" / "adapters" / "fk")]
    moved.close()


def test_runs_are_logged(store):
    run_id = store.start_run("t0", "train", {"name": "s"}, {}, {})
    store.finish_run(run_id, "t1", 2.0)
    runs = store.runs()
    assert runs.loc[0, "finished"] == "t1" and math.isclose(runs.loc[0, "seconds"], 2.0)


# one writer ---------------------------------------------------------------------------

def test_a_second_writer_is_refused_and_a_released_lock_is_free(tmp_path):
    from traitmap.errors import TraitmapError
    from traitmap.store import StudyLock, lock_holder

    first = StudyLock(tmp_path)
    assert lock_holder(tmp_path) == os.getpid()
    with pytest.raises(TraitmapError, match=f"another traitmap process \\(pid {os.getpid()}\\)"):
        StudyLock(tmp_path)
    first.release()
    assert lock_holder(tmp_path) is None
    StudyLock(tmp_path).release()


def test_a_killed_writer_leaves_no_lock(tmp_path):
    import subprocess
    import sys

    from traitmap.store import StudyLock, lock_holder

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from traitmap.store import StudyLock; "
                               "StudyLock(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ})
    assert holder.stdout.readline().strip() == "locked"
    assert lock_holder(tmp_path) == holder.pid
    holder.kill()
    holder.wait()
    assert lock_holder(tmp_path) is None
    StudyLock(tmp_path).release()


def test_a_garbage_database_is_named(tmp_path):
    from traitmap.errors import TraitmapError

    (tmp_path / "db.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(TraitmapError, match="not a traitmap database"):
        Store(tmp_path / "db.sqlite")
    with pytest.raises(TraitmapError, match="no traitmap.sqlite"):
        Store(tmp_path / "absent" / "db.sqlite", create=False)
    assert not (tmp_path / "absent").exists()


def test_mean_output_tokens_counts_generated_answers_only(store):
    generated = [{**record(task="gsm8k", i=i), "output_tokens": n, "logprobs": ""} for i, n in enumerate([10, 30])]
    add_cell(store, "base", -1, "gsm8k", generated, 1.0)
    add_cell(store, "base", -1, "imdb", [record()], 1.0)
    assert store.mean_output_tokens() == {"gsm8k": 20.0}

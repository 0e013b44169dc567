"""Study.load(out_dir): the matrix (base first, seeds averaged), gains, records and adapters."""

import json
from pathlib import Path

import pytest
from helpers import run_study, torch_threads

from traitmap import study
from traitmap.errors import TraitmapError
from traitmap.record import RECORD_FIELDS
from traitmap.results import Study

STUDY = '''name = "api"
base_model = "{model}"
seeds = [0, 1]
sources = ["flipkart", {{task = "flipkart", variant = {{kind = "mislabel"}}}}]
targets = ["imdb", "goat"]

[train]
steps = 2
examples = 8
batch_size = 2
max_length = 64

[eval]
examples = 4
max_new_tokens = {{goat = 4}}
'''
MODELS = ["base", "flipkart", "flipkart@mislabel"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tiny_model_dir, data_dir):
    folder = tmp_path_factory.mktemp("api")
    (folder / "api.toml").write_text(STUDY.format(model=tiny_model_dir))
    config = study.load(folder / "api.toml")
    with torch_threads(1):
        run_study(config, folder / "out", data_dir)
    return config, Study.load(folder / "out")


def test_config_comes_back_as_it_was(loaded):
    config, s = loaded
    assert s.config == config
    assert s.models == MODELS
    assert "api" in repr(s)


def test_matrix_has_base_first_and_averages_seeds(loaded):
    _, s = loaded
    m = s.matrix
    assert list(m.index) == MODELS and list(m.columns) == ["imdb", "goat"]
    cells = s.cells
    for model in MODELS[1:]:
        per_seed = cells[(cells["model"] == model) & (cells["task"] == "imdb")]
        assert sorted(per_seed["seed"]) == [0, 1]
        assert m.loc[model, "imdb"] == pytest.approx(per_seed["score"].mean())
    records = s.records(task="imdb", model="flipkart")
    assert m.loc["flipkart", "imdb"] == pytest.approx(records["correct"].mean())


def test_gains_are_the_matrix_minus_base(loaded):
    _, s = loaded
    m, g = s.matrix, s.gains
    assert list(g.index) == MODELS[1:]
    assert g.to_numpy() == pytest.approx((m.loc[MODELS[1:]] - m.loc["base"]).to_numpy())


def test_records_have_the_documented_columns_and_filters(loaded):
    _, s = loaded
    records = s.records()
    assert tuple(records.columns) == RECORD_FIELDS
    assert len(records) == (2 + 2 * 2 * 2) * 4
    assert set(records[records["model"] == "base"]["seed"]) == {-1}
    assert set(records[records["model"] == "flipkart"]["seed"]) == {0, 1}
    assert set(records["correct"]) <= {0.0, 1.0}
    imdb = s.records(task="imdb")
    assert set(imdb["task"]) == {"imdb"} and all(set(json.loads(x)) == {"negative", "positive"} for x in imdb["logprobs"])
    assert (s.records(task="goat")["logprobs"] == "").all()
    assert s.records(adapter="flipkart@mislabel").equals(s.records(model="flipkart@mislabel"))
    assert set(s.records(model="flipkart@mislabel")["model"]) == {"flipkart@mislabel"}


def test_records_of_a_task_or_model_the_study_lacks_raise(loaded):
    """A misspelt name must not look like a cell with no examples."""
    from traitmap.errors import TraitmapError

    _, s = loaded
    with pytest.raises(TraitmapError, match="no target 'imbd'.*its targets: imdb"):
        s.records(task="imbd")
    with pytest.raises(TraitmapError, match="no model 'flipkrat'"):
        s.records(adapter="flipkrat")


def test_target_examples_are_the_evaluated_ones(loaded):
    _, s = loaded
    ids = [ex.id for ex in s.target_examples("imdb")]
    assert s.records(task="imdb", model="base")["example_id"].tolist() == ids
    assert s.task("imdb").kind == "choice"


def test_adapters_frame(loaded):
    _, s = loaded
    frame = s.adapters
    assert {"name", "seed", "source", "variant", "path"} <= set(frame.columns)
    assert sorted(zip(frame["name"], frame["seed"])) == [("flipkart", 0), ("flipkart", 1),
                                                         ("flipkart@mislabel", 0), ("flipkart@mislabel", 1)]
    assert set(frame["source"]) == {"flipkart"}
    mislabel = frame[frame["name"] == "flipkart@mislabel"]["variant"].iloc[0]
    assert json.loads(mislabel) == {"kind": "mislabel"}
    assert (frame[frame["name"] == "flipkart"]["variant"] == "").all()
    assert all((Path(p) / "adapter_config.json").is_file() for p in frame["path"])


def test_source_examples_apply_the_variant(loaded):
    _, s = loaded
    plain, flipped = s.source_examples("flipkart"), s.source_examples("flipkart@mislabel")
    assert len(plain) == len(flipped) == 8
    assert all(ex.label != ex.meta["true_label"] and ex.target == ex.label for ex in flipped)
    assert not any("true_label" in ex.meta for ex in plain)


def test_loading_a_folder_that_is_not_a_study(tmp_path):
    with pytest.raises(TraitmapError, match="config.json"):
        Study.load(tmp_path)


def test_the_data_dir_of_the_run_wins_over_the_environment(loaded, tmp_path, monkeypatch):
    _, s = loaded
    monkeypatch.setenv("TRAITMAP_DATA_DIR", str(tmp_path))  # another folder: analyses must not read it
    assert s.data_dir == Path(s.meta["data_dir"]) != tmp_path
    moved = Study(s.out_dir, s.config, {"config": {}, "data_dir": str(tmp_path / "gone")})
    assert moved.data_dir == tmp_path  # the recorded folder is gone: the environment's is the fallback


def test_time_spent_counts_the_work_of_every_run_even_unfinished_ones(loaded, tmp_path):
    import shutil
    import sqlite3

    _, s = loaded
    copy = Path(shutil.copytree(s.out_dir, tmp_path / "copy"))
    with sqlite3.connect(copy / "traitmap.sqlite") as db:  # as if every run had been killed after its last cell
        db.execute("UPDATE runs SET finished = NULL, seconds = NULL")
    killed = Study.load(copy)
    cells = killed.cells
    assert killed.meta["work_seconds"] == pytest.approx(s.meta["work_seconds"])
    assert killed.meta["work_seconds"] > cells["seconds"].sum() > 0  # training time counts too
    assert killed.meta["finished"] == cells["finished"].max() and killed.meta["runs"] == 1

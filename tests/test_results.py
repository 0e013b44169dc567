"""Study.load(folder): a run folder's matrix (base first, seeds averaged), gains, records and
adapters; an export of it read as the same study."""

import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_study, torch_threads

from traitmap.config import load, parse
from traitmap import tasks
from traitmap.errors import TraitmapError
from traitmap.export import CELL_COLUMNS, export_study, portable_saved, write_metric_files, write_scores
from traitmap.metrics import CHOICE_METRICS
from traitmap.plan import CONFIG_FILE
from traitmap.record import RECORD_FIELDS, SCORE_FIELDS, Record
from traitmap.results import CELLS_FILE, SCORES_FILE, Export, RunFolder, Study
from traitmap.run import prepare_out_dir, write_matrix_files

CONTROLLED = Path(__file__).resolve().parents[1] / "results" / "controlled"


def record(model: str, seed: int, task: str, i: int, parsed: str, gold: str) -> Record:
    return Record(model=model, seed=seed, task=task, example_id=f"{task}-{i}", prompt="p", output=parsed,
                  output_tokens=1, parsed=parsed, gold=gold, correct=float(parsed == gold), logprobs="{}")


def cell(model: str, seed: int, task: str, right: int, n: int = 4) -> list[Record]:
    """n examples with gold "positive", the first `right` answered right and the rest "negative"."""
    return [record(model, seed, task, i, "positive" if i < right else "negative", "positive") for i in range(n)]


# base on both targets, flipkart's two seeds on imdb only: (model, seed, task) -> examples answered right of 4
CELLS = {("base", -1, "imdb"): 2, ("base", -1, "flipkart"): 1, ("flipkart", 0, "imdb"): 4, ("flipkart", 1, "imdb"): 3}


def hand_made_export(folder: Path) -> pd.DataFrame:
    """An export of the published controlled study's config with a few planted cells; returns its scores."""
    folder.mkdir()
    shutil.copy(CONTROLLED / CONFIG_FILE, folder / CONFIG_FILE)
    scores = pd.DataFrame([r for key, right in CELLS.items() for r in cell(*key, right)])[list(SCORE_FIELDS)]
    scores.to_csv(folder / SCORES_FILE, index=False, compression="gzip")
    cells = scores.groupby(["model", "seed", "task"], sort=False)["correct"].agg(n="size", score="mean").reset_index()
    cells.assign(seconds=1.0).to_csv(folder / CELLS_FILE, index=False)
    matrix = pd.DataFrame({"imdb": [0.5, 0.875], "flipkart": [0.25, None]}, index=pd.Index(["base", "flipkart"], name="model"))
    matrix.to_csv(folder / "matrix.csv")
    return scores


def test_an_export_gives_its_scores_as_records_and_its_published_matrix(tmp_path):
    scores = hand_made_export(tmp_path / "export")
    with Study.load(tmp_path / "export") as study:
        assert isinstance(study, Export) and study.config.name == "controlled"
        pd.testing.assert_frame_equal(study.records(), scores)
        only = study.records(task="imdb", model="flipkart")
        assert len(only) == 8 and set(only["seed"]) == {0, 1} and only.index.tolist() == list(range(8))
        assert study.matrix.loc["flipkart", "imdb"] == 0.875 and pd.isna(study.matrix.loc["flipkart", "flipkart"])
        assert list(study.matrix.index) == ["base", "flipkart"]
        assert study.done_cells() == set(CELLS)
        assert study.matrix_in("accuracy").loc[["base", "flipkart"], ["imdb", "flipkart"]].equals(study.matrix)
        with pytest.raises(TraitmapError, match="no target 'gsm8k'"):
            study.records(task="gsm8k")


def test_an_export_refuses_what_only_a_run_folder_keeps(tmp_path):
    hand_made_export(tmp_path / "export")
    study = Study.load(tmp_path / "export")
    for ask in (lambda: study.adapter_done("flipkart", 0), lambda: study.runs, lambda: study.adapters,
                lambda: study.work_seconds()):
        with pytest.raises(TraitmapError, match="an export keeps no") as error:
            ask()
        assert str(tmp_path / "export") in str(error.value)


def test_a_folder_that_is_neither_a_run_nor_an_export_is_one_clear_error(tmp_path):
    folder = tmp_path / "neither"
    folder.mkdir()
    shutil.copy(CONTROLLED / CONFIG_FILE, folder / CONFIG_FILE)
    with pytest.raises(TraitmapError, match=r"no traitmap\.sqlite \(a run folder\) nor scores\.csv\.gz \(an export\)") as error:
        Study.load(folder)
    assert str(folder) in str(error.value)


def run_folder(out: Path) -> Path:
    """A run folder whose store holds the planted cells, written as the runner writes them."""
    config = parse({"name": "planted", "base_model": "smollm2-135m", "sources": ["flipkart"],
                                 "targets": ["imdb", "flipkart"], "seeds": [0, 1]})
    store = prepare_out_dir(config, out, None)
    for (model, seed, task), right in CELLS.items():
        records = cell(model, seed, task, right)
        store.add_cell(model, seed, task, records, 1.0, "2025-01-01T10:00:00+00:00", tasks.get(task).cell_metrics(records))
    store.close()
    return out


def export_tables(study: Study, folder: Path) -> Path:
    """The tables `traitmap export` writes of a study's results (no adapters to copy here)."""
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(json.dumps(portable_saved(json.loads((study.out_dir / CONFIG_FILE).read_text()))))
    write_matrix_files(folder, study.matrix)
    records = study.records()
    write_scores(records[list(SCORE_FIELDS)], folder / SCORES_FILE)
    study.cells[CELL_COLUMNS].to_csv(folder / CELLS_FILE, index=False)
    write_metric_files(folder, records, study.task)
    return folder


def assert_same_results(run: Study, export: Study) -> None:
    assert run.config == export.config
    fields = list(SCORE_FIELDS)
    exported = export.records()[fields].fillna({"parsed": ""})  # an unparsed answer is an empty CSV field
    pd.testing.assert_frame_equal(exported, run.records()[fields], check_dtype=False)
    pd.testing.assert_frame_equal(export.matrix, run.matrix, check_exact=False, rtol=1e-5)
    assert export.done_cells() == run.done_cells()
    columns = [*CELL_COLUMNS, *CHOICE_METRICS]
    pd.testing.assert_frame_equal(export.cells[columns], run.cells[columns], check_dtype=False)
    pd.testing.assert_frame_equal(export.answer_rates(), run.answer_rates(), check_dtype=False)


def test_a_run_folder_and_its_exported_tables_read_the_same(tmp_path):
    with Study.load(run_folder(tmp_path / "out")) as run:
        assert isinstance(run, RunFolder) and run.adapter_done("flipkart", 0) is False
        with Study.load(export_tables(run, tmp_path / "published")) as export:
            assert isinstance(export, Export)
            assert_same_results(run, export)


def test_the_micro_study_and_its_export_read_the_same(micro_study, tmp_path):
    _, out = micro_study
    with Study.load(out) as run:
        assert all(run.adapter_done(name, seed) for name, seed in run.adapters[["name", "seed"]].itertuples(index=False))
        with Study.load(export_study(run, tmp_path / "published")) as export:
            assert_same_results(run, export)


# a run folder, read for real: the study trained and evaluated on the tiny model

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
    config = load(folder / "api.toml")
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
    moved = RunFolder(s.out_dir, s.config, {"config": {}, "data_dir": str(tmp_path / "gone")})
    assert moved.data_dir == tmp_path  # the recorded folder is gone: the environment's is the fallback


def test_time_spent_counts_the_work_of_every_run_even_unfinished_ones(loaded, tmp_path):
    _, s = loaded
    copy = Path(shutil.copytree(s.out_dir, tmp_path / "copy"))
    with sqlite3.connect(copy / "traitmap.sqlite") as db:  # as if every run had been killed after its last cell
        db.execute("UPDATE runs SET finished = NULL, seconds = NULL")
    killed = Study.load(copy)
    cells = killed.cells
    assert killed.meta["work_seconds"] == pytest.approx(s.meta["work_seconds"])
    assert killed.meta["work_seconds"] > cells["seconds"].sum() > 0  # training time counts too
    assert killed.meta["finished"] == cells["finished"].max() and killed.meta["runs"] == 1

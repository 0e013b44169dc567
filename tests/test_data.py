"""Bad data files are named down to the line and field; source variants do what they say."""

import gzip
import json
from collections import Counter

import pytest

from traitmap import data, tasks
from traitmap.errors import TraitmapError
from traitmap.tasks import Example

TASK = '''
name = "toy"
description = "A toy task over files written by the test."
kind = "choice"
metric = "accuracy"

[data]
path = "toy"
splits = { train = "{train}", test = "test.jsonl" }

[prompt]
input = "{text}"
cue = "Sentiment"

[choice]
label_field = "label"
values = ["pos", "neg", "neu"]
verbalizers = ["positive", "negative", "neutral"]
'''


def toy(tmp_path, train_text, train_file="train.jsonl"):
    """A task whose train split is `train_text`, written to `train_file`."""
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text('{"text": "ok", "label": "pos"}\n')
    if train_file.endswith(".gz"):
        with gzip.open(folder / train_file, "wt") as handle:
            handle.write(train_text)
    else:
        (folder / train_file).write_text(train_text)
    (tmp_path / "toy.toml").write_text(TASK.replace("{train}", train_file))
    return tasks.load_file(tmp_path / "toy.toml"), tmp_path / "data"


def lines(*rows):
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


GOOD = {"text": "fine", "label": "pos"}


def error_of(task, data_dir, split="train") -> TraitmapError:
    with pytest.raises(TraitmapError) as error:
        task.examples(split, data_dir)
    return error.value


def test_reads_jsonl_tsv_csv_json_and_gz(tmp_path):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    contents = {
        "train.jsonl": lines(*rows),
        "train.jsonl.gz": lines(*rows),
        "train.json": json.dumps(rows),
        "train.tsv": "text\tlabel\ngood\tpos\nbad\tneg\n",
        "train.csv": "text,label\ngood,pos\nbad,neg\n",
    }
    for name, text in contents.items():
        task, data_dir = toy(tmp_path / name, text, name)
        assert [e.target for e in task.examples("train", data_dir)] == ["positive", "negative"], name


def test_malformed_json_line(tmp_path):
    task, data_dir = toy(tmp_path, lines(GOOD, "", GOOD, '{"text": "x", "label": "pos"', GOOD))
    error = error_of(task, data_dir)
    assert error.line == 4 and "malformed JSON" in str(error) and str(error.file).endswith("train.jsonl")


def test_missing_field_names_line_and_field(tmp_path):
    task, data_dir = toy(tmp_path, lines(GOOD, "", GOOD, {"label": "neg"}))
    error = error_of(task, data_dir)
    assert (error.line, error.field) == (4, "text") and "missing field" in str(error)


def test_label_outside_the_declared_set(tmp_path):
    task, data_dir = toy(tmp_path, lines(GOOD, {"text": "meh", "label": "mixed"}))
    error = error_of(task, data_dir)
    assert (error.line, error.field) == (2, "label") and "'mixed'" in str(error)


def test_a_line_that_is_not_an_object(tmp_path):
    task, data_dir = toy(tmp_path, lines(GOOD, GOOD, "[1, 2]"))
    error = error_of(task, data_dir)
    assert error.line == 3 and "JSON object" in str(error)


def test_csv_errors_count_the_header(tmp_path):
    task, data_dir = toy(tmp_path, "text,label\ngood,pos\nbad,awful\n", "train.csv")
    assert error_of(task, data_dir).line == 3


def test_empty_split_and_missing_file(tmp_path):
    task, data_dir = toy(tmp_path, "\n\n")
    assert "empty" in str(error_of(task, data_dir))
    (data_dir / "toy" / "test.jsonl").unlink()
    error = error_of(task, data_dir, "test")
    assert "file not found" in str(error) and "train.jsonl" in str(error)  # lists what is there


def test_unknown_split(tmp_path):
    task, data_dir = toy(tmp_path, lines(GOOD))
    error = error_of(task, data_dir, "dev")
    assert error.field == "data.splits" and error.file == task.file and "unknown split 'dev'" in str(error)


# ---------------------------------------------------------------- variants


def examples(counts: dict[str, int]) -> list[Example]:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return [Example(f"e{i}", f"p{i}\nSentiment:\n", label, label, f"text {i}", label) for i, label in enumerate(labels)]


CHOICE = tasks.get("flipkart")
SOURCE = examples({"positive": 60, "negative": 30, "neutral": 10})


def test_mislabel_changes_every_label_consistently():
    flipped = data.mislabel(SOURCE, fraction=1.0, seed=0, labels=CHOICE.choices)
    assert all(new.label != old.label for new, old in zip(flipped, SOURCE))
    assert all(new.target == new.gold == new.label and new.meta["true_label"] == old.label
               for new, old in zip(flipped, SOURCE))
    mapping = {(old.label, new.label) for new, old in zip(flipped, SOURCE)}
    assert len(mapping) == 3  # one wrong label per true label: a derangement
    assert flipped == data.mislabel(SOURCE, fraction=1.0, seed=0, labels=CHOICE.choices)


def test_mislabel_fraction():
    half = data.mislabel(SOURCE, fraction=0.5, seed=3)
    assert sum(new.label != old.label for new, old in zip(half, SOURCE)) == 50
    assert half != data.mislabel(SOURCE, fraction=0.5, seed=4)


def test_balance_equalises():
    balanced = data.balance(SOURCE, seed=0)
    assert Counter(e.label for e in balanced) == {"positive": 10, "negative": 10, "neutral": 10}
    assert [e.id for e in balanced] == sorted((e.id for e in balanced), key=lambda i: int(i[1:]))
    assert balanced == data.balance(SOURCE, seed=0) != data.balance(SOURCE, seed=1)


def test_imbalance_matches_the_ratio():
    skewed = data.imbalance(SOURCE, {"positive": 0.8, "negative": 0.2}, seed=0)
    assert Counter(e.label for e in skewed) == {"positive": 60, "negative": 15}


def test_subsample_is_stratified_and_truncate_caps_targets():
    sample = data.subsample(SOURCE, 10, seed=0)
    assert Counter(e.label for e in sample) == {"positive": 5, "negative": 3, "neutral": 2}
    long = [Example("a", "p", "word " * 100, "1", "t")]
    assert len(data.truncate(long, 50)[0].target) <= 50


def test_apply_variant_validates_its_spec():
    assert data.apply_variant(SOURCE, {"kind": "balance"}, CHOICE, seed=0) == data.balance(SOURCE, seed=0)
    assert len(data.apply_variant(SOURCE, {"kind": "subsample", "n": 7}, CHOICE, seed=0)) == 7
    for spec, field in [({"kind": "shuffle"}, "kind"), ({"kind": "subsample"}, "subsample"),
                        ({"kind": "mislabel", "fraction": 1, "extra": 2}, "mislabel")]:
        with pytest.raises(TraitmapError) as error:
            data.apply_variant(SOURCE, spec, CHOICE, seed=0)
        assert error.value.field == field
    with pytest.raises(TraitmapError, match="generate task"):
        data.apply_variant(SOURCE, {"kind": "mislabel"}, tasks.get("gsm8k"), seed=0)
    with pytest.raises(TraitmapError, match="sum to 1"):
        data.apply_variant(SOURCE, {"kind": "imbalance", "ratio": {"positive": 0.5}}, CHOICE, seed=0)

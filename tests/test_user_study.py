"""A user's own small study, end to end on the tiny model: 2 and 3 sources x 3 targets,
one of them the user's own task and data, through the real command line.

The report must answer "A -> B" first, and no analysis may print what it cannot know
at this size: no `nan`, no gain beyond +-100 points, no library warning on stderr.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REVIEWS_TASK, SUMS_TASK, rows, write_jsonl

# Two whole studies through fresh processes, every analysis and a browser: minutes, not seconds.
pytestmark = pytest.mark.slow

URGENCY = '''name = "urgency"
description = "Customer messages, urgent or normal (synthetic)."
tags = ["classification"]
kind = "choice"
metric = "accuracy"

[data]
path = "urgency"
splits = { train = "train.jsonl", test = "test.jsonl" }
id_field = "id"

[prompt]
instruction = "Is this customer message urgent?"
input = "{text}"
cue = "Urgency"

[choice]
label_field = "label"
values = ["urgent", "normal"]
verbalizers = ["urgent", "normal"]
'''

STUDY = '''name = "mine"
base_model = "{model}"
task_dirs = ["tasks"]
data_dir = "data"
sources = [{sources}]
targets = ["urgency", "reviews", "sums"]

[train]
steps = 2
examples = 24
batch_size = 4
max_length = 64

[eval]
examples = 12
batch_size = 12
max_new_tokens = {{ sums = 4 }}

[analysis]
n_boot = 50
trait_n_boot = 20
similarity_permutations = 20
dependency_bootstrap = 20
similarity_max_texts = 24
'''

THREE = '"urgency", "reviews", { task = "urgency", name = "urgency@mislabel", variant = { kind = "mislabel" } }'
TWO = '"urgency", "reviews"'


def messages(n: int, start: int = 0) -> list[dict]:
    """Two in three messages urgent: an adapter that learns only the label prior still moves the score."""
    urgent = ["My card was charged twice, fix it now", "The site is down and I cannot pay", "Account locked, urgent"]
    normal = ["Thanks for the quick delivery", "How do I change my address?", "Love the new design"]
    return [{"id": f"m{start + i}", "text": f"{(urgent if i % 3 else normal)[i % 3]} ({start + i})",
             "label": "urgent" if i % 3 else "normal"} for i in range(n)]


def reviews(path: Path, negative: int, positive: int) -> list[dict]:
    found = rows(path, 400)
    return [r for r in found if r["label"] == 0][:negative] + [r for r in found if r["label"] == 1][:positive]


def user_folder(root: Path, model: Path, data_dir: Path, sources: str) -> Path:
    """A study folder as the tutorial builds one: tasks/, data/ and study.toml side by side."""
    (root / "tasks").mkdir(parents=True)
    for name, text in (("urgency", URGENCY), ("reviews", REVIEWS_TASK), ("sums", SUMS_TASK)):
        (root / "tasks" / f"{name}.toml").write_text(text)
    data = root / "data"
    write_jsonl(data / "urgency" / "train.jsonl", messages(24))
    write_jsonl(data / "urgency" / "test.jsonl", messages(12, start=100))
    write_jsonl(data / "reviews" / "train.jsonl", reviews(data_dir / "imdb" / "train.jsonl", 6, 18))
    write_jsonl(data / "reviews" / "test.jsonl", reviews(data_dir / "imdb" / "test.jsonl", 8, 4))
    write_jsonl(data / "sums" / "train.jsonl", rows(data_dir / "gsm8k" / "train.jsonl", 8))
    write_jsonl(data / "sums" / "test.jsonl", rows(data_dir / "gsm8k" / "test.jsonl", 6))
    study = root / "study.toml"
    study.write_text(STUDY.format(model=model, sources=sources))
    return study


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command's path in a fresh process, without TRAITMAP_DATA_DIR: the study file says where."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TRAITMAP_DATA_DIR"}
    return subprocess.run([sys.executable, "-m", "traitmap.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module", params=[THREE, TWO], ids=["three_sources", "two_sources"])
def finished(request, tmp_path_factory, tiny_model_dir, data_dir):
    root = tmp_path_factory.mktemp("user")
    study = user_folder(root, tiny_model_dir, data_dir, request.param)
    done = run_cli("run", study, "--out", root / "out", cwd=root / "tasks")  # from another folder than the study's
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "out", done


def visible(html: str) -> str:
    """The page's text and figure specs, without the inlined plotly.js library and the
    examples' own text (a review may well say "nan")."""
    html = re.sub(r'<script type="application/json" id="examples-data">.*?</script>', "", html, flags=re.S)
    return re.sub(r"<script>.*?</script>", "", html, flags=re.S)


def test_no_warning_reaches_the_terminal(finished):
    _, done = finished
    assert "Warning" not in done.stderr and "warn" not in done.stderr.lower(), done.stderr[-3000:]


def test_the_report_opens_on_the_source_to_target_answers(finished):
    out, _ = finished
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    first = re.search(r'<section id="([a-z]+)"', html).group(1)
    assert first == "answers"
    answers = re.search(r'<section id="answers".*?</section>', html, re.S).group(0)
    assert "95% interval" in answers and "urgency" in answers and "reviews" in answers
    # the tiny model gives one answer to every question: 100% "urgent" where two in three are
    assert "collapsed: answers urgent 100% of the time" in answers
    assert html.index('id="study"') > html.index('id="examples"')  # configuration last, folded
    assert '<details class="folded">' in re.search(r'<section id="study".*?</section>', html, re.S).group(0)


def test_no_nan_and_no_impossible_gain_anywhere(finished):
    out, _ = finished
    page = visible((out / "report" / "index.html").read_text(encoding="utf-8"))
    assert not re.search(r"\b(nan|NaN)\b", page), re.search(r".{80}\b(nan|NaN)\b.{80}", page, re.S)
    for value in re.findall(r"[+−-](\d+(?:\.\d+)?) (?:points|pts)", page):
        assert float(value) <= 100
    for name in ("transfer_prediction.csv",):
        path = out / "analysis" / name
        if path.is_file():
            import pandas as pd
            assert pd.read_csv(path)[["predicted"]].abs().max().max() <= 1


def test_skipped_analyses_say_why(finished):
    out, _ = finished
    skipped = json.loads((out / "analysis" / "skipped.json").read_text())
    assert "needs at least 5 sources" in skipped["predict"]
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    prediction = re.search(r'<section id="prediction".*?</section>', html, re.S).group(0)
    assert "Skipped for this study: needs at least 5 sources" in prediction
    assert "analysis/" not in re.sub(r"<[^>]+>", "", html.split('<section id="examples"')[0])


def test_traits_are_present_whenever_the_gains_vary(finished):
    out, _ = finished
    import pandas as pd

    gains = pd.read_csv(out / "gains.csv", index_col="model")
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    traits = re.search(r'<section id="traits"(.*?)</section>', html, re.S).group(1)
    if (gains.nunique() > 1).any():
        assert 'id="fig-loadings"' in traits


def test_the_claims_of_the_paper_are_not_read_off_the_users_task(finished):
    out, _ = finished
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    claims = re.search(r'<section id="claims".*?</section>', html, re.S).group(0)
    assert "not among the paper" in claims and 'class="verdict' not in html


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(), reason="needs chromium and chromium-driver")
def test_the_report_opens_in_chromium_on_the_answers(finished, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out, _ = finished
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chrome-profile'}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get((out / "report" / "index.html").as_uri())
        WebDriverWait(driver, 90).until(lambda d: d.execute_script("return document.body.dataset.plots === 'ready'"))
        first = driver.find_element(By.CSS_SELECTOR, "main section")
        assert first.get_attribute("id") == "answers"
        assert first.find_element(By.TAG_NAME, "h2").text.endswith("What each source does to each target")
        assert "95% interval" in first.text
        text = driver.find_element(By.TAG_NAME, "main").text
        assert not re.search(r"\bnan\b", text, re.I)
        config = driver.find_element(By.ID, "study")
        assert not config.find_element(By.CSS_SELECTOR, "table").is_displayed()  # folded until asked for
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


def test_gains_that_vary_on_one_target_give_traits_and_a_true_reason(finished, tmp_path):
    """The issue's study: the adapters differ on the user's task only. The tiny model learns
    nothing, so the answers are planted in a copy of the store; then PCA, the analyses and
    the report run as a user would run them."""
    import shutil
    import sqlite3

    import pandas as pd

    out = Path(shutil.copytree(finished[0], tmp_path / "varied"))
    adapters = [m for m in pd.read_csv(out / "matrix.csv", index_col="model").index if m != "base"]
    with sqlite3.connect(out / "traitmap.sqlite") as db:
        for k, model in enumerate(adapters):  # first adapter right on every question, the others on a few
            db.execute("UPDATE records SET correct = CASE WHEN ? OR CAST(substr(example_id, 2) AS INT) % ? = 0 "
                       "THEN 1.0 ELSE 0.0 END WHERE model = ? AND task = 'urgency'", (k == 0, k + 2, model))
        db.execute("UPDATE cells SET score = (SELECT AVG(correct) FROM records r WHERE r.model = cells.model "
                   "AND r.task = cells.task AND r.seed = cells.seed)")
    for command in (["matrix", out], ["pca", out], ["analyze", out, "--only", "uncertainty", "--only", "traits",
                                                    "--only", "predict"], ["report", out]):
        done = run_cli(*command, cwd=tmp_path)
        assert done.returncode == 0 and "arning" not in done.stderr, done.stderr[-3000:]
    gains = pd.read_csv(out / "gains.csv", index_col="model")
    assert gains["urgency"].nunique() > 1 and (gains[["reviews", "sums"]] == 0).all().all()
    skipped = json.loads((out / "analysis" / "skipped.json").read_text())
    assert "1 such target (urgency)" in skipped["traits"]
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    traits = re.search(r'<section id="traits"(.*?)</section>', html, re.S).group(1)
    assert 'id="fig-loadings"' in traits and "1 such target (urgency)" in traits
    page = visible(html)
    assert not re.search(r"\b(nan|NaN)\b", page)
    answers = re.search(r'<section id="answers".*?</section>', html, re.S).group(0)
    assert "95% interval" in answers and all(float(v) <= 100 for v in re.findall(r"[+−](\d+\.\d)", answers))

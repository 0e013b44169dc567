"""The report page: sections, narrative numbers from the planted study, escaping, offline-ness."""

from __future__ import annotations

import json
import re

import pandas as pd
from fake_study import PCA, SECTIONS, TASKS, XSS
from plotly.offline import get_plotlyjs

from traitmap.report import build_report
from traitmap.report.sections import EXAMPLE_CAP, example_rows, pca_frames

def _html(study, tmp_path) -> str:
    path = build_report(study, tmp_path)
    assert path == tmp_path / "report" / "index.html"
    return path.read_text(encoding="utf-8")


def _section(html: str, id: str) -> str:
    m = re.search(rf'<section id="{id}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"section {id} missing"
    return m.group(1)


def _without_plotly(html: str) -> str:
    return html.replace(get_plotlyjs(), "")


def test_every_section_and_figure_is_present(built):
    html = built
    for id in SECTIONS:
        body = _section(html, id)
        assert id == "claims" or 'class="note"' not in body.split("<figure")[0], f"{id} unexpectedly empty"
        assert f'href="#{id}"' in html
    for fig in ["fig-matrix", "fig-gains", "fig-scree", "fig-loadings", "fig-biplot", "fig-profiles", "fig-lengths",
                "fig-class-shares", "fig-label-lengths", "fig-similarity-0", "fig-similarity-1", "fig-similarity-gain", "fig-dependency", "fig-prediction"]:
        assert f'id="{fig}"' in html and f'id="{fig}-spec"' in html
    assert html.count(get_plotlyjs()) == 1  # inlined once


def test_narrative_numbers_come_from_the_planted_study(built):
    html = built
    assert ('<div class="value">+40.0</div><div class="detail">flipkart → flipkart, 95% interval +37.0 to +43.0, '
            '50 examples</div>') in html  # at a glance
    assert '<div class="value">−35.0</div><div class="detail">flipkart@mislabel → flipkart, 95% interval' in html
    assert '<div class="value">7 / 12</div>' in html and '<div class="value">95%</div>' in html
    matrix = _section(html, "matrix")
    assert "The flipkart adapter gains most on flipkart (+40.0 points); flipkart@mislabel hurts flipkart most (−35.0)." in matrix
    assert "7 of 12 adapter–target cells beat the base model (5 with an interval above zero, 1 below)" in matrix
    assert "flipkart transfers best (+13.5) and flipkart@mislabel worst (−6.0)" in matrix
    assert "Choice targets are scored in accuracy (the study&#39;s [analysis] metric)" in matrix
    assert ("On 1 of 3 adapter–target cells on choice targets the accuracy gain is positive but the balanced-accuracy "
            "gain is not") in matrix
    assert ("The largest is flipkart@mislabel on imdb (+5.0 points in accuracy, −5.0 in balanced accuracy; it answers "
            "&#39;positive&#39; on 90.0% of the examples, against 50.0% in the gold labels).") in matrix
    assert "1 of 4 cells on choice targets answer with a label mix more than 25% away from the gold mix" in matrix
    traits = _section(html, "traits")
    assert "The first 3 components explain 95% of the variance of the gains (PC0 alone 60%" in traits
    assert "PC0 loads most on flipkart (+0.90) and against mbpp (−0.05)" in traits
    assert "flipkart carries the most PC0 (+0.42) and goat the most PC1 (+0.21)" in traits
    study_text = _section(html, "study")
    assert "3 LoRA adapters on tiny-llama" in study_text and "800 scored examples" in study_text
    assert "1 h 02 min" in study_text
    assert ("flipkart&#39;s answers come closest (90, gain +4.0) and goat&#39;s are furthest (8, gain +3.0)"
            in _section(html, "lengths"))
    assert "sits 0.50 of the way from the base model&#39;s to its source&#39;s" in _section(html, "lengths")
    classes = _section(html, "classes")
    assert "goat answers neutral 87% of the time, flipkart@mislabel only 3%" in classes
    assert "In imdb, positive texts have a median length of 250 chars against 200 for negative." in classes
    similarity = _section(html, "similarity")
    assert ("goat is the source most similar in style to mbpp (0.40), yet its adapter gains −3.0 points there, "
            "while flipkart@mislabel gains +1.0 (similarity 0.30).") in similarity
    assert "+0.33 for style (Mantel p = 0.41) and +0.27 for semantic (Mantel p = 0.52)" in similarity
    dependency = _section(html, "dependency")
    assert "solves questions containing oprd 2.40× as often as the base model (n = 34)" in dependency
    assert "amod is helped least (×0.80, n = 80)" in dependency  # "(all)" is not a relation
    controlled = _section(html, "controlled")
    assert "flipkart@mislabel scores 5.0% against 80.0% for flipkart" in controlled
    assert "<td>80.00%</td>" in controlled
    prediction = _section(html, "prediction")
    assert "off by 2.7 points on average over 3 adapter–target cells, with the sign right for 2 of 3" in prediction
    assert "The largest miss is goat on mbpp (predicted +1.0, measured −3.0)." in prediction


def test_missing_analyses_say_so_in_one_line(bare_study, tmp_path):
    html = _html(bare_study, tmp_path)
    for id in ["traits", "lengths", "classes", "similarity", "dependency", "prediction"]:
        body = _section(html, id)
        assert body.count('<p class="note">') == 1 and "<figure" not in body, id
        assert "Not computed for this study" in body
    assert "The flipkart adapter gains most" in _section(html, "matrix")  # no matrix_ci.csv: still drawn
    assert "interval above zero" not in html


def test_dataset_text_is_inert(built):
    html = built
    page = _without_plotly(html)
    assert "<img" not in page and "onerror=alert" not in page.replace("onerror=alert(1)\\u003e", "")
    assert "</script><img" not in page
    assert "\u2028" not in page and "<b>bold?</b>" not in page
    data = re.search(r'<script type="application/json" id="examples-data">(.*?)</script>', html, re.S).group(1)
    assert "\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e" in data
    rows = json.loads(data)["rows"]
    prompts = [r[json.loads(data)["columns"].index("prompt")] for r in rows]
    assert XSS + " & more\u2028line" in prompts  # the browser gets the text back unchanged


def test_config_strings_are_escaped(study, tmp_path):
    study.config.name = "<i>study</i>"
    html = _html(study, tmp_path)
    assert "<i>study</i>" not in html and "&lt;i&gt;study&lt;/i&gt;" in html


def test_the_data_folder_is_shown_by_name_not_by_a_machine_path(study, tmp_path):
    study.meta["data_dir"] = "/home/someone/corpora/traitmap-data"
    html = _section(_html(study, tmp_path), "study")
    assert "/home/someone" not in html and "<td>data_dir</td><td>traitmap-data</td>" in html


def test_page_requests_nothing_from_the_network(built):
    page = _without_plotly(built)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<link\b|@import|@font-face|url\(", page)
    assert "default-src 'none'" in page  # the browser refuses any request, as a second line of defence


def test_write_is_atomic_and_repeatable(study, tmp_path):
    first = build_report(study, tmp_path).read_text(encoding="utf-8")
    second = build_report(study, tmp_path).read_text(encoding="utf-8")
    assert first == second
    assert [p.name for p in (tmp_path / "report").iterdir()] == ["index.html"]


def test_examples_are_capped_evenly_and_say_so():
    records = pd.DataFrame({"model": ["a", "b"] * 2000, "seed": 0, "task": "t", "example_id": range(4000),
                            "prompt": "p", "output": "o" * 10_000, "parsed": "", "gold": "g", "correct": 1.0})
    data, total = example_rows(records)
    models = [r[0] for r in data["rows"]]
    assert total == 4000 and len(models) == EXAMPLE_CAP and models.count("a") == models.count("b")
    assert "more characters not shown" in data["rows"][0][data["columns"].index("output")]


def test_pca_is_read_whichever_way_round(study):
    expected = pca_frames(PCA, study.gains)
    flipped = dict(PCA, loadings=pd.DataFrame(PCA["loadings"]).T.to_dict(orient="index"),
                   scores=pd.DataFrame(PCA["scores"]).to_dict(orient="index"))
    as_lists = dict(PCA, loadings=[[PCA["loadings"][pc][t] for t in TASKS] for pc in PCA["components"]],
                    scores=[[PCA["scores"][a][pc] for pc in PCA["components"]] for a in study.gains.index])
    for variant in (flipped, as_lists):
        ratio, loadings, scores = pca_frames(variant, study.gains)
        pd.testing.assert_series_equal(ratio, expected[0])
        pd.testing.assert_frame_equal(loadings.loc[TASKS], expected[1].loc[TASKS], check_dtype=False)
        pd.testing.assert_frame_equal(scores.loc[study.gains.index], expected[2].loc[study.gains.index],
                                      check_dtype=False)


def test_an_empty_study_still_renders(bare_study, tmp_path):
    """Only the base model and no records yet: every section says what is missing, nothing raises."""
    bare_study.matrix = bare_study.matrix.loc[["base"]]
    bare_study.gains = bare_study.matrix.drop(index="base")
    bare_study.config.sources = []
    bare_study._records = bare_study._records.iloc[0:0]
    html = _html(bare_study, tmp_path)
    assert "No scored examples in this study." in _section(html, "examples")
    assert "Not run for this study" in _section(html, "controlled")


def test_the_time_spent_sums_every_run_of_a_resumed_study(study, tmp_path):
    study.meta = {**study.meta, "work_seconds": 754.0, "runs": 3, "finished": "2025-11-26T11:00:00"}
    text = _section(_html(study, tmp_path), "study")
    assert "The training and evaluation took 12 min 34 s over 3 runs from 2025-11-26T09:00:00 to 2025-11-26T11:00:00" in text
    assert "to nan" not in text and "took 0 s" not in text


def test_a_share_of_variance_that_is_100_percent_by_construction_says_so(built):
    traits = _section(built, "traits")
    assert "With 3 adapters that share is 100% by construction" in " ".join(traits.split())


def test_the_paper_claims_have_their_own_section(bare_study, tmp_path):
    """Without the variant adapter the planted study can test "classification helps math":
    flipkart's +4 points on gsm8k from 50 questions is within noise, and the page says so."""
    bare_study.config.sources = [s for s in bare_study.config.sources if not s.variant]
    bare_study.matrix = bare_study.matrix.drop(index="flipkart@mislabel")
    bare_study._records = bare_study._records[bare_study._records["model"] != "flipkart@mislabel"]
    claims = _section(_html(bare_study, tmp_path), "claims")
    assert ('<p class="verdict inconclusive-at-this-size"><strong>Classification training helps math (GSM8K): '
            'inconclusive at this size.</strong> Averaged over 1 classification adapter,') in claims
    assert 'class="verdict' not in _section(_html(bare_study, tmp_path), "matrix")


def test_the_page_opens_on_what_each_source_does_to_each_target(built):
    assert re.search(r'<section id="(\w+)"', built).group(1) == "answers"
    answers = " ".join(_section(built, "answers").split())
    assert ("Helps, with a 95% interval above zero: flipkart → flipkart +40.0 (+37.0 to +43.0); "
            "flipkart → imdb +12.0 (+9.0 to +15.0)") in answers
    assert "Hurts, with a 95% interval below zero: flipkart@mislabel → flipkart −35.0 (−38.0 to −32.0)." in answers
    # goat answers "neutral" 87% of the time on flipkart, whose gold labels are a third each
    assert "<td>goat</td><td>flipkart</td><td>−2.0</td><td>−5.0 to +1.0</td><td>50</td>" \
           "<td>answers neutral 87% of the time (gold 33%)</td>" in answers.replace("> <", "><")


def test_an_adapter_that_collapsed_to_one_answer_is_flagged(study, tmp_path):
    conf = pd.read_csv(study.analysis_dir / "classes_confusion.csv")
    conf.loc[(conf["model"] == "goat") & (conf["predicted"] != "neutral"), "count"] = 0
    conf.to_csv(study.analysis_dir / "classes_confusion.csv", index=False)
    html = _html(study, tmp_path)
    answers = " ".join(_section(html, "answers").split())
    assert "collapsed: answers neutral 100% of the time" in answers
    assert "goat collapsed to one answer on some target" in answers


def test_no_loss_card_when_nothing_lost_and_no_nan_without_intervals(bare_study, tmp_path):
    bare_study.matrix = bare_study.matrix.clip(lower=bare_study.matrix.loc["base"], axis=1)
    bare_study.gains = bare_study.matrix.drop(index="base") - bare_study.matrix.loc["base"]
    html = _html(bare_study, tmp_path)
    assert "largest loss" not in html and "largest gain" in html
    assert "no intervals computed" in html
    assert not re.search(r"\b(nan|NaN)\b", _without_plotly(html).split('id="examples-data"')[0])


def test_skipped_analyses_give_their_reason_not_a_file_name(bare_study, tmp_path):
    bare_study.analysis_dir.mkdir(parents=True)
    (bare_study.analysis_dir / "skipped.json").write_text(json.dumps({
        "lengths": "needs a generate target; this study's targets are all choice tasks",
        "predict": "needs at least 5 sources with gains, this study has 3"}))
    html = _html(bare_study, tmp_path)
    assert "Skipped for this study: needs a generate target; this study&#39;s targets are all choice tasks." \
           in _section(html, "lengths")
    assert "Skipped for this study: needs at least 5 sources with gains, this study has 3." in _section(html, "prediction")
    assert "analysis/" not in html.split('id="examples-data"')[0]


def test_configuration_comes_last_and_folded_and_the_base_model_has_no_seed(built):
    ids = re.findall(r'<section id="(\w+)"', built)
    assert ids[-1] == "study" and ids.index("claims") < ids.index("examples")
    assert '<details class="folded"><summary>' in _section(built, "study")
    data = json.loads(re.search(r'id="examples-data">(.*?)</script>', built, re.S).group(1))
    seed = data["columns"].index("seed")
    assert {r[seed] for r in data["rows"] if r[data["columns"].index("model")] == "base"} == {None}


def test_a_study_of_other_tasks_than_the_papers_gets_no_verdicts(study, tmp_path):
    study.config.targets = [*TASKS, "urgency"]
    claims = _section(_html(study, tmp_path), "claims")
    assert "Not tested on this study: its target urgency is not among the paper" in claims

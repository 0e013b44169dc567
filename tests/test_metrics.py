from sklearn.metrics import balanced_accuracy_score, f1_score

from traitmap import metrics


def test_always_the_majority_label_scores_chance_in_balanced_accuracy():
    gold = ["no"] * 72 + ["yes"] * 28
    always_no = ["no"] * 100
    assert metrics.accuracy(always_no, gold) == 0.72
    assert metrics.balanced_accuracy(always_no, gold) == 0.5
    assert metrics.answer_rates(always_no, ["yes", "no"]) == {"yes": 0.0, "no": 1.0, "": 0.0}


def test_metrics_agree_with_scikit_learn_on_parsed_answers():
    gold = ["a", "b", "c", "a", "b", "c", "a", "a"]
    parsed = ["a", "b", "b", "a", "c", "c", "b", "a"]
    assert abs(metrics.balanced_accuracy(parsed, gold) - balanced_accuracy_score(gold, parsed)) < 1e-12
    assert abs(metrics.macro_f1(parsed, gold, ["a", "b", "c"]) - f1_score(gold, parsed, average="macro")) < 1e-12


def test_an_unparsed_answer_is_wrong_for_every_label():
    gold = ["yes", "no", "no"]
    parsed = ["", None, "no"]
    assert metrics.balanced_accuracy(parsed, gold) == 0.25
    assert metrics.answer_rates(parsed, ["yes", "no"])[""] == 2 / 3

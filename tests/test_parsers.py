"""Each parser finds the answer a model wrote, and None when there is none."""

import pytest

from traitmap import parsers


@pytest.mark.parametrize("text, expected", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("#### 1,000", "1000"),
    ("So the answer is 3, 4 and finally 5.", "5"),
    ("#### -7\nThe answer is 12", "-7"),
    ("It costs $12.50.", "12.5"),
    ("The total is 18.00", "18"),
    ("10-5 leaves 5", "5"),
    ("no numbers here", None),
])
def test_final_number(text, expected):
    assert parsers.final_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("123 + 4567 = 4690", "4690"),
    ("12 - 15 = -3", "-3"),
    ("8914 - 64 * 100 = 8914 - 6400 = 2514\nTherefore, 8914 / 64 = 139 R 18", "139 R 18"),
    ("Therefore, 10 / 5 = 2", "2"),
    ("7 / 0 = undefined", "undefined"),
    ("the answer: 1,234,567", "1234567"),
    ("= 0042", "42"),
    ("nothing", None),
])
def test_goat_answer(text, expected):
    assert parsers.goat_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("```python\ndef f():\n    return 1\n```\nThis returns 1.", "def f():\n    return 1"),
    ("Here:\n```\nx = 1\n", "x = 1"),
    ("    return a + b\n", "    return a + b"),
    ("   \n", None),
])
def test_python_code(text, expected):
    assert parsers.python_code(text) == expected


def test_first_choice_needs_a_word_boundary():
    assert parsers.first_choice(" Positive.", ["positive", "negative"]) == "positive"
    assert parsers.first_choice("not sure", ["no", "yes"]) is None
    assert parsers.first_choice("not offensive", ["no", "not offensive"]) == "not offensive"


def test_same_answer():
    assert parsers.same_answer("18.0", "18")
    assert parsers.same_answer("139  R 18", "139 R 18")
    assert not parsers.same_answer("139 R 17", "139 R 18")
    assert not parsers.same_answer("17", "18")

"""The Goat generator: right answers, consistent chains of thought, disjoint splits."""

import re

import pytest

from traitmap import parsers
from traitmap.tasks import goat

SPLITS = {"train": (3000, 1), "test": (500, 2)}
OPERATORS = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}


@pytest.fixture(scope="module")
def splits(data_dir):
    return {name: goat.read_split(data_dir / "goat", name, SPLITS) for name in SPLITS}


def test_train_and_test_do_not_overlap(splits):
    train, test = ({row["input"] for row in splits[name]} for name in ("train", "test"))
    assert len(train) == 3000 and len(test) == 500
    assert not train & test


def test_generation_is_seeded(splits, data_dir):
    templates = goat.load_templates(data_dir / "goat")
    assert goat.generate(templates, 50, seed=7) == goat.generate(templates, 50, seed=7)
    assert goat.generate(templates, 50, seed=7) != goat.generate(templates, 50, seed=8)


def test_answers_are_arithmetically_right(splits):
    for row in splits["train"] + splits["test"]:
        a, operator, b = row["input"].split(" ")
        a, b = int(a), int(b)
        if operator == "/":
            expected = "undefined" if b == 0 else (f"{a // b} R {a % b}" if a % b else str(a // b))
        else:
            expected = str(OPERATORS[operator](a, b))
        assert row["answer"] == expected, row
        assert row["output"].startswith(row["input"] + " = ")
        assert row["output"].endswith(expected)
        assert parsers.goat_answer(row["output"]) == expected


def test_every_operation_and_long_numbers_occur(splits):
    rows = splits["train"]
    assert {row["operation"] for row in rows} == set(goat.MIX)
    assert max(len(row["input"].split(" ")[0]) for row in rows if row["operation"] == "add") == 16
    products = [int(row["answer"]) for row in rows if row["operation"] == "mul_n"]
    assert max(len(str(p)) for p in products) <= 12


def test_chain_of_thought_steps_are_equal(splits):
    """Each '=' in a multiplication chain and each long-division line is true."""
    for row in splits["train"]:
        if row["operation"] == "mul_n":
            sides = row["output"].split(" = ")
            assert len({eval(side) for side in sides}) == 1, row["output"]  # plain integer arithmetic
        if row["operation"] == "div_n" and "\n" in row["output"]:
            for line in row["output"].split("\n")[:-1]:
                line = re.sub(r"^\d+ / \d+ = ", "", line)
                assert len({eval(side) for side in line.split(" = ")}) == 1, line


def test_instruction_shows_the_problem(splits):
    for row in splits["test"][:200]:
        a, operator, b = row["input"].split(" ")
        assert a in row["instruction"] and b in row["instruction"]


def test_multiplication_and_division_steps():
    assert goat.multiplication_steps(397, 4429) == (
        "4429 * (300 + 90 + 7) = 4429 * 300 + 4429 * 90 + 4429 * 7 = 1328700 + 398610 + 31003"
        " = 1727310 + 31003 = 1758313")
    assert goat.long_division_steps(8914, 64) == (
        "8914 - 64 * 100 = 8914 - 6400 = 2514\n2514 - 64 * 30 = 2514 - 1920 = 594\n"
        "594 - 64 * 9 = 594 - 576 = 18\nTherefore, 8914 / 64 = 139 R 18")

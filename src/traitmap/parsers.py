"""Answer parsers: turn a model's free text into the answer a task compares.

A task TOML names its parser (`[generate] parser = "final_number"`); `PARSERS` maps
that name to one function here, so each answer shape is parsed in exactly one place.
Every parser returns None when it finds nothing answer-like, so an unparseable output
counts as wrong instead of crashing an evaluation.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# A number as people write it: optional sign (not the minus of "10-5"), thousands
# groups, optional decimals. "1,000.50" is one number; "3, 4" is two.
_NUMBER = re.compile(r"(?:(?<!\d)-)?\d+(?:,\d{3})*(?:\.\d+)?")
# A Goat answer: an integer, "quotient R remainder", or "undefined" (division by 0).
_GOAT_ANSWER = re.compile(r"-?\d+(?:\s*R\s*\d+)?|undefined")
# The first fenced block (```python ... ```); an unclosed fence runs to the end.
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def canonical_number(text: str) -> str | None:
    """'1,000.50' -> '1000.5', '18.00' -> '18'; None if `text` is not a number."""
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    return format(value if value != 0 else Decimal(0), "f")


def final_number(text: str) -> str | None:
    """GSM8K style: the number after '####' if there is one, else the last number.

    The first '####' wins: it is the answer the model committed to, and anything after
    it is the model rambling on.
    """
    if "####" in text:
        match = _NUMBER.search(text.split("####", 1)[1])
        if match:
            return canonical_number(match.group())
    numbers = _NUMBER.findall(text)
    return canonical_number(numbers[-1]) if numbers else None


def goat_answer(text: str) -> str | None:
    """Goat style: the answer after the last '=', else the last integer.

    Goat targets end "... = 1758313" or "Therefore, 8914 / 64 = 139 R 18"; the whole
    "q R r" is the answer, normalised to single spaces.
    """
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    if "=" in text:
        match = _GOAT_ANSWER.search(text.rsplit("=", 1)[1])
        if match:
            return _normalise_goat(match.group())
    integers = re.findall(r"-?\d+", text)
    return _normalise_goat(integers[-1]) if integers else None


def _normalise_goat(answer: str) -> str:
    if answer == "undefined":
        return answer
    parts = [str(int(part)) for part in answer.split("R")]
    return " R ".join(parts)


def python_code(text: str) -> str | None:
    """The code in a model output: the first ``` fenced block, else the whole text.

    Leading indentation is kept: a HumanEval completion is a function body that is
    appended to the prompt.
    """
    match = _FENCE.search(text)
    code = (match.group(1) if match else text).rstrip()
    return code if code.strip() else None


def first_choice(text: str, choices: list[str]) -> str | None:
    """The verbalizer a free-text output starts with (case-insensitive), else None.

    Longest choices are tried first and must end at a word boundary, so "no" does not
    match "not offensive".
    """
    start = text.strip().lower()
    for choice in sorted(choices, key=len, reverse=True):
        word = choice.lower()
        if start.startswith(word) and (len(start) == len(word) or not start[len(word)].isalnum()):
            return choice
    return None


def same_answer(parsed: str, gold: str) -> bool:
    """Exact match: numbers compare by value ('18.0' == '18'), anything else as text
    with whitespace collapsed ('139 R 18')."""
    parsed_number, gold_number = canonical_number(parsed), canonical_number(gold)
    if parsed_number is not None and gold_number is not None:
        return parsed_number == gold_number
    return " ".join(parsed.split()) == " ".join(gold.split())


PARSERS = {
    "final_number": final_number,
    "goat_answer": goat_answer,
    "python_code": python_code,
}

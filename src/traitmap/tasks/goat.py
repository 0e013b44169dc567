"""Goat's arithmetic data, generated as the original was.

Goat (Liu & Low, 2023) never shipped its data as a file, only the script that makes it
(`dataset.ipynb` in liutiedong/goat); docs/data.md describes it. This
module re-implements that generator over the real instruction templates
(`<data_dir>/goat/goat_templates.json`): a seeded mix of

- addition and subtraction of up to 16-digit numbers (every digit-length pair, longer
  ones sampled more often),
- n-digit x 1-digit multiplication, and n x m multiplication with a product of up to
  12 digits, whose target is a chain of thought: split the shorter factor into
  place-value terms, multiply, and add the partial products left to right,
- n / 1-digit division, and n / m division (dividend up to 12 digits, quotient up to 7)
  written as long division: "left - divisor * chunk = left - product = rest" lines
  ending "Therefore, a / b = q R r". Division by zero answers "undefined" (rare).

A record is {instruction, input, output, answer, operation}: `input` is the canonical
expression ("123 + 4567"), `instruction` a random template around it (sometimes in
words or without spaces), `output` the training target, `answer` the final value.
Splits are generated with their own seeds, and train never repeats an input of any
other split, so train and test cannot overlap.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from pathlib import Path

from traitmap.data import read_text
from traitmap.errors import TraitmapError

TEMPLATES_FILE = "goat_templates.json"

# Share of each operation in a split.
MIX = {"add": 0.2, "sub": 0.2, "mul_1": 0.1, "mul_n": 0.2, "div_1": 0.1, "div_n": 0.2}
MAX_DIGITS = 16  # addition, subtraction, and the long side of x 1-digit and / 1-digit
MAX_PRODUCT_DIGITS = 12  # n x m products, and n / m dividends
MAX_QUOTIENT_DIGITS = 7
DIVIDE_BY_ZERO_RATE = 0.01  # of / 1-digit problems

# How an expression may be written in words inside an instruction.
_IN_WORDS = {
    "+": ["{a} plus {b}", "the sum of {a} and {b}"],
    "-": ["{a} minus {b}", "the difference of {a} and {b}"],
    "*": ["{a} times {b}", "{a} multiplied by {b}", "the product of {a} and {b}"],
    "/": ["{a} divided by {b}"],
}


def load_templates(folder: Path | str) -> list[str]:
    """The instruction templates, repeats kept (common ones are listed more often)."""
    path = Path(folder) / TEMPLATES_FILE
    if not path.is_file():
        raise TraitmapError("Goat instruction templates not found (see docs/data.md, 'goat')", file=path)
    try:
        loaded = json.loads(read_text(path, "Goat template file"))
    except json.JSONDecodeError as bad:
        raise TraitmapError(f"malformed JSON: {bad.msg} (column {bad.colno})", file=path, line=bad.lineno) from None
    if not isinstance(loaded, dict) or not all(isinstance(t, str) for t in loaded.values()):
        raise TraitmapError("must be a JSON object of name: template string", file=path)
    templates = list(loaded.values())
    for key, template in enumerate(templates, start=1):
        if "{input}" not in template:
            raise TraitmapError("template has no {input}", file=path, field=str(key))
    return templates


def read_split(folder: Path | str, split: str, splits: dict[str, tuple[int, int]]) -> list[dict]:
    """The rows of one split, given every split's (size, seed), as `[data.splits]` says.

    A held-out split depends only on its own seed; train also excludes every input of
    the held-out splits, so they are generated first.
    """
    if split not in splits:
        raise TraitmapError(f"unknown split '{split}'; this task has: {', '.join(splits)}", field="split")
    folder = str(Path(folder).resolve())
    if split != "train":
        return [dict(row) for row in _generate(folder, *splits[split], exclude=())]
    held_out = tuple(sorted(splits[name] for name in splits if name != "train"))
    return [dict(row) for row in _generate(folder, *splits["train"], exclude=held_out)]


@functools.lru_cache(maxsize=8)
def _generate(folder: str, size: int, seed: int, exclude: tuple[tuple[int, int], ...]) -> list[dict]:
    """Cached generation; `exclude` lists the (size, seed) of splits not to overlap."""
    templates = load_templates(folder)
    taken = {row["input"] for held_out in exclude for row in _generate(folder, *held_out, exclude=())}
    return generate(templates, size, seed, exclude=taken)


def generate(templates: list[str], n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """n records with distinct inputs, none of them in `exclude`; same seed, same records."""
    rng = random.Random(seed)
    operations, weights = list(MIX), list(MIX.values())
    seen, records = set(exclude), []
    for _ in range(20 * n + 1000):
        if len(records) == n:
            return records
        operation = rng.choices(operations, weights)[0]
        a, operator, b, output, answer = _PROBLEMS[operation](rng)
        expression = f"{a} {operator} {b}"
        if expression in seen:
            continue
        seen.add(expression)
        records.append({
            "instruction": rng.choice(templates).format(input=_phrase(a, operator, b, rng)),
            "input": expression,
            "output": output,
            "answer": answer,
            "operation": operation,
        })
    if len(records) < n:
        raise TraitmapError(f"could not generate {n} distinct Goat problems (got {len(records)})")
    return records


# ---------------------------------------------------------------- problems
# Each returns (a, operator, b, output, answer).


def _addition(rng: random.Random):
    a, b = _number_pair(rng)
    return a, "+", b, f"{a} + {b} = {a + b}", str(a + b)


def _subtraction(rng: random.Random):
    a, b = _number_pair(rng)
    return a, "-", b, f"{a} - {b} = {a - b}", str(a - b)


def _multiply_by_digit(rng: random.Random):
    a, b = _number(rng, _pick(rng, _LENGTHS)), rng.randint(0, 9)
    if rng.random() < 0.5:
        a, b = b, a
    return a, "*", b, f"{a} * {b} = {a * b}", str(a * b)


def _multiply(rng: random.Random):
    i, j = _pick(rng, _FACTOR_LENGTHS)
    a, b = _number(rng, i), _number(rng, j)
    return a, "*", b, f"{a} * {b} = {multiplication_steps(a, b)}", str(a * b)


def multiplication_steps(a: int, b: int) -> str:
    """'4429 * (300 + 90 + 7) = 4429 * 300 + ... = 1328700 + ... = 1758313'."""
    big, small = (a, b) if len(str(a)) >= len(str(b)) else (b, a)
    terms = [int(digit) * 10 ** power for power, digit in enumerate(reversed(str(small))) if digit != "0"][::-1]
    if len(terms) < 2:
        return str(a * b)
    steps = [f"{big} * ({' + '.join(map(str, terms))})", " + ".join(f"{big} * {term}" for term in terms)]
    partials = [big * term for term in terms]
    steps.append(" + ".join(map(str, partials)))
    while len(partials) > 1:
        partials = [partials[0] + partials[1]] + partials[2:]
        steps.append(" + ".join(map(str, partials)))
    return " = ".join(steps)


def _divide_by_digit(rng: random.Random):
    a = _number(rng, _pick(rng, _LENGTHS))
    b = 0 if rng.random() < DIVIDE_BY_ZERO_RATE else rng.randint(1, 9)
    if b == 0:
        return a, "/", b, f"{a} / {b} = undefined", "undefined"
    answer = _quotient(a, b)
    return a, "/", b, f"{a} / {b} = {answer}", answer


def _divide(rng: random.Random):
    j, k = _pick(rng, _DIVISOR_QUOTIENT_LENGTHS)
    divisor, quotient = _number(rng, j), max(1, _number(rng, k))
    a = divisor * quotient + rng.randint(0, divisor - 1)
    return a, "/", divisor, f"{a} / {divisor} = {long_division_steps(a, divisor)}", _quotient(a, divisor)


def long_division_steps(a: int, b: int) -> str:
    """'8914 - 64 * 100 = 8914 - 6400 = 2514\\n...\\nTherefore, 8914 / 64 = 139 R 18'."""
    answer = _quotient(a, b)
    lines, left = [], a
    quotient = a // b
    for power, digit in reversed(list(enumerate(reversed(str(quotient))))):
        if digit == "0":
            continue
        chunk = int(digit) * 10 ** power
        lines.append(f"{left} - {b} * {chunk} = {left} - {b * chunk} = {left - b * chunk}")
        left -= b * chunk
    if not lines:
        return answer
    return "\n".join(lines + [f"Therefore, {a} / {b} = {answer}"])


def _quotient(a: int, b: int) -> str:
    quotient, remainder = divmod(a, b)
    return f"{quotient} R {remainder}" if remainder else str(quotient)


_PROBLEMS = {
    "add": _addition, "sub": _subtraction, "mul_1": _multiply_by_digit,
    "mul_n": _multiply, "div_1": _divide_by_digit, "div_n": _divide,
}


# ---------------------------------------------------------------- helpers


def _number(rng: random.Random, digits: int) -> int:
    """A random number with exactly `digits` digits (0-9 for one digit)."""
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def _lengths(options: list) -> tuple[list, list[int]]:
    """Digit lengths (or pairs of them) with cumulative weights: a longer problem is
    more likely, as there are more long numbers to learn."""
    weights = [sum(option) if isinstance(option, tuple) else option for option in options]
    return options, list(itertools.accumulate(weights))


def _pick(rng: random.Random, lengths: tuple[list, list[int]]):
    options, cumulative = lengths
    return rng.choices(options, cum_weights=cumulative)[0]


_LENGTHS = _lengths(list(range(1, MAX_DIGITS + 1)))
_PAIR_LENGTHS = _lengths([(i, j) for i in range(1, MAX_DIGITS + 1) for j in range(1, MAX_DIGITS + 1)])
_FACTOR_LENGTHS = _lengths([(i, j) for i in range(2, MAX_PRODUCT_DIGITS) for j in range(2, MAX_PRODUCT_DIGITS)
                            if i + j <= MAX_PRODUCT_DIGITS])
_DIVISOR_QUOTIENT_LENGTHS = _lengths([(j, k) for j in range(2, MAX_PRODUCT_DIGITS)
                                      for k in range(1, MAX_QUOTIENT_DIGITS + 1) if j + k <= MAX_PRODUCT_DIGITS])


def _number_pair(rng: random.Random) -> tuple[int, int]:
    i, j = _pick(rng, _PAIR_LENGTHS)
    return _number(rng, i), _number(rng, j)


def _phrase(a: int, operator: str, b: int, rng: random.Random) -> str:
    """The expression as the instruction shows it: usually 'a + b', sometimes in words
    or with the spaces removed."""
    style = rng.random()
    if style < 0.1:
        return f"{a}{operator}{b}"
    if style < 0.2:
        return rng.choice(_IN_WORDS[operator]).format(a=a, b=b)
    return f"{a} {operator} {b}"

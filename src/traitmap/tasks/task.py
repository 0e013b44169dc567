"""A task: one TOML file turned into prompts, training targets, gold answers and a scorer.

`tasks.schema.load_file` reads and validates the TOML; `Task.examples` reads a split's
rows through `traitmap.data` (or a generator, for Goat) and renders each row into an
`Example`.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from traitmap import data, metrics, parsers, sandbox
from traitmap.backends.base import AdapterRef, Request, Response
from traitmap.errors import TraitmapError
from traitmap.tasks import goat

KINDS = ("choice", "generate")
# A task's own metric is its cells' score; a choice cell also stores balanced accuracy and
# macro-F1 (`cell_metrics`), which a study's matrix can be built on instead.
METRICS = {"choice": (metrics.DEFAULT_METRIC,), "generate": ("exact_match", "pass@1", "none")}
GENERATORS = {"goat": goat.read_split}
DEFAULT_MAX_INPUT_CHARS = 1200
TRUNCATION_MARKER = " ..."
# A choice task is scored by comparing verbalizer log-probabilities; if an evaluator
# generates freely instead, a verbalizer fits in a few tokens on one line.
CHOICE_MAX_NEW_TOKENS = 8
CHOICE_STOP = ["\n"]


@dataclass(frozen=True)
class Example:
    """One row of a task, rendered.

    prompt ends right before the answer; target is what a source trains on; gold is the
    answer scored against (a verbalizer for choice tasks, the final answer otherwise);
    input_text is the raw input without instruction or truncation, for the text
    analyses; label is the verbalizer for choice tasks, else None; meta holds the row's
    split and index, declared meta fields, and code tests.
    """

    id: str
    prompt: str
    target: str
    gold: str
    input_text: str
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    """One answer read by its task: the output (choice: the predicted verbalizer), its length
    in tokens, the parsed answer, whether it is right, and the choices' log-probs as JSON."""

    output: str
    output_tokens: int
    parsed: str | None
    correct: bool
    logprobs_json: str


@dataclass(frozen=True)
class PromptFormat:
    """The paper's base-model format: `{instruction}\\n{input}\\n{cue}:\\n` + answer.

    The instruction line is left out when empty. With an empty cue the prompt is the
    input alone, for completion-style tasks (HumanEval: the model continues the code).
    """

    input: str
    instruction: str = ""
    cue: str = "Answer"
    answer: str | None = None
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS

    def render(self, fields: dict) -> tuple[str, str]:
        """(prompt, input_text) for one row; the prompt's input is truncated if too long."""
        input_text = render(self.input, fields)
        shown = data.cut_text(input_text, self.max_input_chars, TRUNCATION_MARKER) if self.max_input_chars else input_text
        body = "\n".join(part for part in (self.instruction, shown) if part)
        return (f"{body}\n{self.cue}:\n" if self.cue else body), input_text


@dataclass(frozen=True)
class ChoiceSpec:
    label_field: str
    values: list  # raw label values in the data, in order
    verbalizers: list[str]  # the answer words, same order


@dataclass(frozen=True)
class GenerateSpec:
    parser: str
    gold: str  # template
    parse_gold: bool = False
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    tests: str | None = None  # template, pass@1 tasks
    code_prefix: str = ""  # template: what the parsed code is appended to (HumanEval: the prompt)
    timeout: float = sandbox.DEFAULT_TIMEOUT_S  # pass@1: seconds one program may run (set from the references)


@dataclass(frozen=True)
class GeneratedData:
    """`[data] generator = "goat"`: rows made by code from files in the data folder."""

    generator: str
    path: str
    splits: dict[str, tuple[int, int]]  # split -> (size, seed)


@dataclass(frozen=True, eq=False)  # identity equality keeps a Task hashable
class Task:
    """A validated task file: what to read, how to prompt, how to score."""

    name: str
    description: str
    tags: list[str]
    kind: str
    metric: str
    data: data.DataSpec | GeneratedData
    prompt: PromptFormat
    choice: ChoiceSpec | None = None
    generate: GenerateSpec | None = None
    can_train: bool = True
    train_refusal: str = ""
    id_field: str | None = None
    meta_fields: list[str] = field(default_factory=list)
    file: Path | None = None

    # ------------------------------------------------ the contract's attributes

    @property
    def choices(self) -> list[str] | None:
        """Verbalizers in label order (choice tasks), else None."""
        return list(self.choice.verbalizers) if self.choice else None

    @property
    def max_new_tokens(self) -> int:
        return self.generate.max_new_tokens if self.generate else CHOICE_MAX_NEW_TOKENS

    @property
    def stop(self) -> list[str]:
        return list(self.generate.stop) if self.generate else list(CHOICE_STOP)

    @property
    def can_evaluate(self) -> bool:
        """False for a source-only task (metric "none": nothing to score against)."""
        return self.metric != "none"

    @property
    def splits(self) -> list[str]:
        return list(self.data.splits)

    def check_trainable(self) -> None:
        """Raise if this task must not be a training source (e.g. it holds test data)."""
        if not self.can_train:
            raise TraitmapError(f"task '{self.name}' cannot be a training source: {self.train_refusal}",
                                file=self.file, field="can_train")

    def check_evaluable(self) -> None:
        if not self.can_evaluate:
            raise TraitmapError(f"task '{self.name}' is a training source only: it has nothing to score answers "
                                f"against (metric = \"none\")", file=self.file, field="metric")

    # ------------------------------------------------ examples

    def examples(self, split: str, data_dir: Path | str | None, *, limit: int | None = None, seed: int = 0) -> list[Example]:
        """The examples of one split, read from `data_dir` (None: from the hub).

        With `limit`, a seeded random sample (stratified by label for choice tasks) in
        the split's order. Asking for "train" of a task that cannot train raises.
        """
        if split == "train":
            self.check_trainable()
        if split not in self.splits:
            raise TraitmapError(f"unknown split '{split}'; task '{self.name}' has: {', '.join(self.splits)}",
                                file=self.file, field="data.splits")
        rows, origin = self._rows(split, data_dir)
        data.check_rows(rows, origin, required=self._required_fields(),
                        label_field=self.choice.label_field if self.choice else None,
                        label_values=self.choice.values if self.choice else None)
        examples = [self._rendered(split, index, row, origin) for index, row in enumerate(rows)]
        self._check_unique_ids(examples, origin)
        return examples if limit is None else data.subsample(examples, limit, seed)

    def _rows(self, split: str, data_dir: Path | str | None) -> tuple[list[dict], data.Origin]:
        if isinstance(self.data, GeneratedData):
            if data_dir is None:
                raise TraitmapError(f"task '{self.name}' generates its data from files in the data directory; "
                                    "pass data_dir", field="data_dir")
            folder = Path(data_dir) / self.data.path
            rows = GENERATORS[self.data.generator](folder, split, self.data.splits)
            return rows, data.Origin(f"{self.data.generator} generator ({folder}), split {split}")
        return data.read_split(self.data, split, data_dir,
                               label_field=self.choice.label_field if self.choice else None,
                               label_values=self.choice.values if self.choice else None)

    def _required_fields(self) -> set[str]:
        templates = [self.prompt.input]
        if self.generate:
            templates += [self.prompt.answer, self.generate.gold, self.generate.tests or "", self.generate.code_prefix]
        fields = {name for template in templates for name in template_fields(template)}
        if self.choice:
            fields.add(self.choice.label_field)
        if self.id_field:
            fields.add(self.id_field)
        return fields

    def _rendered(self, split: str, index: int, row: dict, origin: data.Origin) -> Example:
        """`_example`, with a row that does not fit the templates reported by its line."""
        try:
            return self._example(split, index, row, origin)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise TraitmapError(f"this row does not fit the task's templates ({type(error).__name__}: {error})",
                                file=origin.name, line=origin.line(index)) from None

    def _example(self, split: str, index: int, row: dict, origin: data.Origin) -> Example:
        fields = _format_fields(row)
        prompt, input_text = self.prompt.render(fields)
        meta = {"split": split, "row": index, **{name: row.get(name) for name in self.meta_fields}}
        if self.choice:
            label = self.choice.verbalizers[self.choice.values.index(row[self.choice.label_field])]
            target = gold = label
        else:
            label = None
            target, gold = render(self.prompt.answer, fields), render(self.generate.gold, fields)
            if self.generate.parse_gold:
                parsed = self.parse(gold)
                if parsed is None:
                    raise TraitmapError(f"the gold answer {gold[-80:]!r} does not parse with '{self.generate.parser}'",
                                        file=origin.name, line=origin.line(index), field="generate.gold")
                gold = parsed
            if self.generate.tests is not None:
                meta["tests"] = render(self.generate.tests, fields)
                meta["code_prefix"] = render(self.generate.code_prefix, fields)
        example_id = str(row[self.id_field]) if self.id_field else f"{split}-{index}"
        return Example(example_id, prompt, target, gold, input_text, label, meta)

    def _check_unique_ids(self, examples: list[Example], origin: data.Origin) -> None:
        seen = set()
        for index, example in enumerate(examples):
            if example.id in seen:
                raise TraitmapError(f"duplicate id {example.id!r}", file=origin.name, line=origin.line(index),
                                    field=self.id_field)
            seen.add(example.id)

    # ------------------------------------------------ requests and scoring

    def request(self, example: Example, adapter: AdapterRef | None = None, max_new_tokens: int | None = None) -> Request:
        """What a backend must answer for this example, for the base model or `adapter`."""
        if self.choice:
            return Request(example.prompt, adapter, choices=tuple(self.choice.verbalizers))
        return Request(example.prompt, adapter, max_new_tokens=max_new_tokens or self.max_new_tokens,
                       stop=tuple(self.stop))

    def score(self, example: Example, response: Response, *, sandboxed: bool = True) -> Scored:
        """A backend's response to `request(example)`, read and scored (code: `sandboxed`
        as `sandbox.run_python` says)."""
        if self.choice:
            lp = response.logprobs
            predicted = max(self.choice.verbalizers, key=lambda c: lp[c])
            return Scored(predicted, response.choice_tokens[predicted], predicted, predicted == example.gold,
                          json.dumps({c: lp[c] for c in self.choice.verbalizers}))
        parsed = self.parse(response.text)
        correct = parsed is not None and self.is_correct(parsed, example, sandboxed=sandboxed)
        return Scored(response.text, response.tokens, parsed, correct, "")

    def cell_metrics(self, records) -> metrics.CellMetrics:
        """One cell's metrics from its records (dicts or a table with parsed, gold, correct).

        The score is the task's own metric, the mean of `correct`; a choice cell adds
        balanced accuracy, macro-F1 and the share of each label answered, which see an
        adapter that answers one label whatever the input.
        """
        frame = pd.DataFrame(records, columns=["parsed", "gold", "correct"])
        correct = frame["correct"].tolist()
        score = sum(correct) / len(correct) if correct else float("nan")
        if not self.choice:
            return metrics.CellMetrics(score, {self.metric: score})
        answered = [p if isinstance(p, str) else None for p in frame["parsed"]]  # NULL or NaN: no answer
        return metrics.CellMetrics(score, metrics.choice_metrics(answered, frame["gold"].tolist(), self.choice.verbalizers),
                                   metrics.answer_rates(answered, self.choice.verbalizers))

    def parse(self, output_text: str) -> str | None:
        """The answer in a model output: a verbalizer (choice) or the parser's answer."""
        if self.choice:
            return parsers.first_choice(output_text, self.choice.verbalizers)
        return parsers.PARSERS[self.generate.parser](output_text)

    def is_correct(self, parsed: str | None, example: Example, *, sandboxed: bool = True) -> bool:
        """Score one parsed answer; code tasks run the example's tests in the sandbox."""
        self.check_evaluable()
        if parsed is None:
            return False
        if self.metric == "accuracy":
            return parsed == example.gold
        if self.metric == "exact_match":
            return parsers.same_answer(parsed, example.gold)
        return self.run_tests(parsed, example, sandboxed=sandboxed).passed

    def run_tests(self, code: str, example: Example, *, timeout: float | None = None,
                  sandboxed: bool = True) -> sandbox.SandboxResult:
        """Run code_prefix + code + tests in the sandbox (for the task's `timeout` unless
        given); the result says why it failed."""
        if "tests" not in example.meta:
            raise TraitmapError(f"task '{self.name}' has no code tests", file=self.file, field="generate.tests")
        program = f"{example.meta['code_prefix']}{code}\n\n{example.meta['tests']}\n"
        return sandbox.run_python(program, timeout=timeout or self.generate.timeout, sandboxed=sandboxed)

    def check_tokens(self, tokenizer) -> None:
        """Verbalizers the scorer can tell apart with this tokenizer.

        The scorer compares summed log-probabilities of each verbalizer's tokens, with one
        forward per prompt when every verbalizer is one token: two verbalizers with the
        same tokens tie forever, and one whose tokens start with all of another's scores
        below it on every example (more tokens, each a log-probability <= 0).
        """
        if not self.choice:
            return
        ids = {v: tuple(tokenizer(v, add_special_tokens=False)["input_ids"]) for v in self.choice.verbalizers}
        for a in self.choice.verbalizers:
            for b in self.choice.verbalizers:
                if a == b:
                    continue
                if ids[a] == ids[b]:
                    raise TraitmapError(f"verbalizers {a!r} and {b!r} are the same tokens {list(ids[a])} for this "
                                        "model's tokenizer: the scorer cannot tell them apart", file=self.file,
                                        field="choice.verbalizers")
                if ids[b][: len(ids[a])] == ids[a]:
                    raise TraitmapError(f"verbalizer {b!r} is {a!r}'s tokens {list(ids[a])} plus more for this model's "
                                        f"tokenizer, so it always scores below {a!r}: make them differ from the first "
                                        "token", file=self.file, field="choice.verbalizers")


# ---------------------------------------------------------------- templates


class _Lines(list):
    """A list field in a template: `{test_list}` is its items one per line, while
    `{test_list[0]}` still indexes it."""

    def __format__(self, spec: str) -> str:
        return "\n".join(map(str, self))


def _format_fields(row: dict) -> dict:
    return {name: _Lines(value) if isinstance(value, list) else value for name, value in row.items()}


def render(template: str, fields: dict) -> str:
    """str.format over a row's fields, with line endings normalised to \\n."""
    return template.format_map(fields).replace("\r\n", "\n")


def template_fields(template: str) -> set[str]:
    """The row fields a template reads ('{test_list[0]}' reads 'test_list')."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.add(name.split(".")[0].split("[")[0])
    return names

"""A task: one TOML file turned into prompts, training targets, gold answers and a scorer.

`load_file` reads and validates the TOML (the schema is in `traitmap.tasks`' docstring
and docs/tasks.md); `Task.examples` reads a split's rows through `traitmap.data` (or a
generator, for Goat) and renders each row into an `Example`.
"""

from __future__ import annotations

import difflib

import json
import string
import tomllib
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
    logprobs: str


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


# ---------------------------------------------------------------- reading a TOML file

_REQUIRED = object()


class _Table:
    """One TOML table being read: typed gets, and an error for any key nobody read."""

    def __init__(self, values: dict, file: Path, prefix: str = ""):
        self.values, self.file, self.prefix, self.known = values, file, prefix, set()

    def error(self, message: str, key: str) -> TraitmapError:
        return TraitmapError(message, file=self.file, field=self.prefix + key)

    def get(self, key: str, kind: type | tuple, default: Any = _REQUIRED, what: str = "") -> Any:
        self.known.add(key)
        if key not in self.values:
            if default is _REQUIRED:
                near = difflib.get_close_matches(key, [k for k in self.values if k not in self.known], n=1)
                hint = f" (the unknown key '{self.prefix}{near[0]}' beside it: did you mean {key}?)" if near else ""
                raise self.error("required key is missing" + hint, key)
            return default
        value = self.values[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise self.error(f"must be {what or ' or '.join(k.__name__ for k in kinds)}, got {value!r}", key)
        return value

    def get_list(self, key: str, item: type | tuple, default: Any = _REQUIRED) -> list:
        values = self.get(key, list, default)
        items = item if isinstance(item, tuple) else (item,)
        if values is not None and any(isinstance(v, bool) or not isinstance(v, items) for v in values):
            raise self.error(f"must be a list of {' or '.join(k.__name__ for k in items)}", key)
        return values

    def get_template(self, key: str, default: Any = _REQUIRED) -> str:
        template = self.get(key, str, default)
        if template is None:
            return None
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as error:
            raise self.error(f"bad template: {error} (write {{{{ and }}}} for literal braces)", key) from None
        if any(not name or name[0].isdigit() for name in fields):
            raise self.error("template fields must be row field names, like {question}", key)
        return template

    def table(self, key: str, required: bool = True) -> _Table | None:
        value = self.get(key, dict, _REQUIRED if required else None, what="a table")
        return None if value is None else _Table(value, self.file, f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = sorted(set(self.values) - self.known)
        if unknown:
            raise self.error(f"unknown key; expected one of: {', '.join(sorted(self.known))}", unknown[0])


def load_file(path: Path | str) -> Task:
    """Read and validate one task TOML file."""
    path = Path(path)
    try:
        values = tomllib.loads(data.read_text(path, "task file"))
    except tomllib.TOMLDecodeError as error:
        raise TraitmapError(f"not valid TOML: {error}", file=path) from None
    top = _Table(values, path)
    name = top.get("name", str)
    if name != path.stem:
        raise top.error(f"must match the file name '{path.stem}'", "name")
    kind = top.get("kind", str)
    if kind not in KINDS:
        raise top.error(f"must be one of {KINDS}", "kind")
    metric = top.get("metric", str)
    if metric not in METRICS[kind]:
        raise top.error(f"a {kind} task's metric is one of {METRICS[kind]}", "metric")
    can_train = top.get("can_train", bool, True)
    train_refusal = top.get("train_refusal", str, "")
    if not can_train and not train_refusal:
        raise top.error("say why the task cannot train (can_train = false)", "train_refusal")
    data_table = top.table("data")
    task = Task(
        name=name,
        description=top.get("description", str),
        tags=top.get_list("tags", str, []),
        kind=kind,
        metric=metric,
        data=_read_data(data_table, name),
        prompt=_read_prompt(top.table("prompt"), kind),
        choice=_read_choice(top.table("choice", required=kind == "choice")) if kind == "choice" else None,
        generate=_read_generate(top.table("generate", required=kind == "generate"), metric) if kind == "generate" else None,
        can_train=can_train,
        train_refusal=train_refusal,
        id_field=data_table.get("id_field", str, None),
        meta_fields=data_table.get_list("meta_fields", str, []),
        file=path,
    )
    data_table.finish()
    top.finish()
    hub = getattr(task.data, "hub", None)
    if hub and hub.label_values is not None and (not task.choice or len(hub.label_values) != len(task.choice.values)):
        raise TraitmapError("needs one hub value per [choice] label value", file=path, field="data.hub.label_values")
    return task


def _read_data(table: _Table, name: str) -> data.DataSpec | GeneratedData:
    folder = table.get("path", str, name)
    generator = table.get("generator", str, None)
    splits = table.table("splits")
    if generator is not None:
        if generator not in GENERATORS:
            raise table.error(f"unknown generator; known: {', '.join(GENERATORS)}", "generator")
        sizes = {}
        for split in list(splits.values):
            spec = splits.table(split)
            sizes[split] = (spec.get("size", int), spec.get("seed", int))
            spec.finish()
        splits.finish()
        return GeneratedData(generator, folder, sizes)
    files = {}
    for split in list(splits.values):
        value = splits.values[split]
        if isinstance(value, str):
            splits.known.add(split)
            files[split] = data.SplitFile(value)
            continue
        spec = splits.table(split)
        where = spec.table("where", required=False)
        ranges = {}
        for field_name in list(where.values) if where else []:
            bounds = where.get_list(field_name, int)
            if len(bounds) != 2:
                raise where.error("must be [low, high] (inclusive)", field_name)
            ranges[field_name] = (bounds[0], bounds[1])
        files[split] = data.SplitFile(spec.get("file", str), ranges)
        spec.finish()
    splits.finish()
    if not files:
        raise table.error("declare at least one split", "splits")
    coalesce_table = table.table("coalesce", required=False)
    coalesce = {}
    if coalesce_table:
        for new_field in list(coalesce_table.values):
            coalesce[new_field] = coalesce_table.get_list(new_field, str)
        coalesce_table.finish()
    return data.DataSpec(folder, files, _read_hub(table.table("hub", required=False)), coalesce)


def _read_hub(table: _Table | None) -> data.HubSource | None:
    if table is None:
        return None
    splits_table = table.table("splits")
    splits = {split: splits_table.get(split, str) for split in list(splits_table.values)}
    splits_table.finish()
    fields_table = table.table("fields", required=False)
    fields = {}
    if fields_table:
        fields = {hub_name: fields_table.get(hub_name, str) for hub_name in list(fields_table.values)}
        fields_table.finish()
    hub = data.HubSource(table.get("id", str), table.get("config", str, None), splits, fields,
                         table.get_list("label_values", (str, int), None))
    table.finish()
    return hub


def _read_prompt(table: _Table, kind: str) -> PromptFormat:
    answer = table.get_template("answer", None)
    if kind == "generate" and answer is None:
        raise table.error("a generate task needs the training target template", "answer")
    if kind == "choice" and answer is not None:
        raise table.error("a choice task trains on its verbalizers; remove this key", "answer")
    max_input_chars = table.get("max_input_chars", int, DEFAULT_MAX_INPUT_CHARS)
    if max_input_chars < 0:
        raise table.error("must be >= 0 (0: no limit)", "max_input_chars")
    prompt = PromptFormat(
        input=table.get_template("input"),
        instruction=table.get("instruction", str, ""),
        cue=table.get("cue", str, "Answer"),
        answer=answer,
        max_input_chars=max_input_chars,
    )
    table.finish()
    return prompt


def _read_choice(table: _Table) -> ChoiceSpec:
    values = table.get_list("values", (str, int))
    verbalizers = table.get_list("verbalizers", str, [str(value) for value in values])
    if len(values) < 2 or len(set(values)) != len(values):
        raise table.error("needs at least two distinct label values", "values")
    if len(verbalizers) != len(values) or len(set(verbalizers)) != len(verbalizers) or not all(v.strip() for v in verbalizers):
        raise table.error("needs one distinct, non-empty verbalizer per label value", "verbalizers")
    stripped = [v.strip() for v in verbalizers]
    twins = [v for v in verbalizers if stripped.count(v.strip()) > 1]
    if twins:
        raise table.error(f"verbalizers {twins[0]!r} and {twins[1]!r} differ only by spaces: a tokenizer reads them as "
                          "the same answer; make them differ in their words", "verbalizers")
    choice = ChoiceSpec(table.get("label_field", str), values, verbalizers)
    table.finish()
    return choice


def _read_generate(table: _Table, metric: str) -> GenerateSpec:
    parser = table.get("parser", str)
    if parser not in parsers.PARSERS:
        raise table.error(f"unknown parser; known: {', '.join(parsers.PARSERS)}", "parser")
    tests = table.get_template("tests", None)
    if (metric == "pass@1") != (tests is not None):
        raise table.error("pass@1 tasks, and only they, declare code tests", "tests")
    max_new_tokens = table.get("max_new_tokens", int, 512)
    if max_new_tokens < 1:
        raise table.error("must be >= 1", "max_new_tokens")
    timeout = table.get("timeout", (int, float), sandbox.DEFAULT_TIMEOUT_S, what="a number of seconds")
    if not 0 < timeout <= 600:
        raise table.error("must be a number of seconds in (0, 600]", "timeout")
    if "timeout" in table.values and tests is None:
        raise table.error("only pass@1 tasks run code; remove this key", "timeout")
    spec = GenerateSpec(
        parser=parser,
        gold=table.get_template("gold"),
        parse_gold=table.get("parse_gold", bool, False),
        max_new_tokens=max_new_tokens,
        stop=table.get_list("stop", str, []),
        tests=tests,
        code_prefix=table.get_template("code_prefix", ""),
        timeout=float(timeout),
    )
    table.finish()
    return spec

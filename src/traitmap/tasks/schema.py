"""Reading a task's TOML file into a `Task`: every key checked, typed and described in one
place (the schema: `traitmap.tasks`' docstring and docs/tasks.md); an error names the file,
its line and the key."""

from __future__ import annotations

import difflib
import string
import tomllib
from pathlib import Path
from typing import Any

from traitmap import data, parsers, sandbox
from traitmap.errors import TraitmapError
from traitmap.tasks.task import (DEFAULT_MAX_INPUT_CHARS, GENERATORS, KINDS, METRICS, ChoiceSpec, GeneratedData,
                                 GenerateSpec, PromptFormat, Task)


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

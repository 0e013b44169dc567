"""Rows from local files or the Hugging Face hub, and the source variants.

Both paths go through `datasets.load_dataset` (the "json"/"csv" builders for local
files, the dataset id for the hub), then through the same renames and checks, so a
hub dataset and a local copy of it yield the same rows. `datasets` reports a bad
file poorly ("An error occurred while generating the dataset"), so on a failure the
file is re-scanned here to name the line and the field.

Source variants (`mislabel`, `balance`, `imbalance`, `subsample`, `truncate`) are
pure functions over a list of `Example`s and a seed, used by the controlled
experiments: same seed, same result; order is always the input order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import random
import re
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitmap.errors import TraitmapError

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv"}


@dataclass(frozen=True)
class SplitFile:
    """One split's file, optionally only the rows whose integer fields lie in
    inclusive ranges (MBPP's splits are task-id ranges of one file)."""

    file: str
    where: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class HubSource:
    """Where the same data lives on the hub, and how its columns map to ours.

    fields: hub column -> our field name. label_values: the hub's label values, in the
    order of the task's declared label values (GLUE MNLI uses 0/1/2 where the local
    file says entailment/neutral/contradiction).
    """

    id: str
    config: str | None
    splits: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    label_values: list | None = None


@dataclass(frozen=True)
class DataSpec:
    """A task's `[data]` table: where its rows come from."""

    path: str
    splits: dict[str, SplitFile]
    hub: HubSource | None = None
    coalesce: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """Where rows came from, to name it in errors: a local file or a hub split."""

    name: str
    path: Path | None = None

    def line(self, row_index: int) -> int | None:
        """1-based line of a row: JSONL lines (blank ones skipped), CSV after the header."""
        if self.path is None:
            return None
        if _builder(self.path)[0] == "csv":
            return row_index + 2
        if _is_json_array(self.path):
            return None
        count = -1
        for number, text in enumerate(_lines(self.path), start=1):
            if text.strip():
                count += 1
                if count == row_index:
                    return number
        return None


# ---------------------------------------------------------------- reading rows


def read_split(spec: DataSpec, split: str, data_dir: Path | str | None, *,
               label_field: str | None = None, label_values: list | None = None) -> tuple[list[dict], Origin]:
    """The rows of one split: from `data_dir/spec.path` or, with data_dir=None, the hub."""
    if data_dir is None:
        rows, origin = _read_hub(spec, split, label_field, label_values)
    else:
        if split not in spec.splits:
            raise TraitmapError(f"unknown split '{split}'; this task has: {', '.join(spec.splits)}", field="split")
        split_file = spec.splits[split]
        path = Path(data_dir) / spec.path / split_file.file
        rows, origin = read_file(path), Origin(str(path), path)
        rows = _select(rows, split_file.where, origin)
    for new_field, candidates in spec.coalesce.items():
        for row in rows:
            row[new_field] = next((row[name] for name in candidates if row.get(name) not in (None, "")), None)
    if not rows:
        raise TraitmapError(f"split '{split}' is empty", file=origin.name)
    return rows, origin


def read_file(path: Path | str) -> list[dict]:
    """All rows of a .jsonl/.json/.csv/.tsv file (optionally .gz), read through `datasets`.

    The file is scanned here first, so that a bad byte, a malformed JSON line or a field
    whose type changes is reported with its line number rather than pyarrow's message.
    """
    path = Path(path)
    builder, options = _builder(path)
    if not path.is_file():
        if path.is_dir():
            raise TraitmapError("is a folder, not a data file", file=path)
        folder = path.parent
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        hint = f"; the folder holds: {', '.join(present)}" if present else f"; folder {folder} does not exist"
        raise TraitmapError(f"file not found{hint}", file=path)
    scan_file(path)
    import datasets  # heavy; only needed once data is actually read

    try:
        with _quiet(datasets):
            table = datasets.load_dataset(builder, data_files={"rows": str(path)}, split="rows", **options)
    except Exception as error:  # datasets wraps everything; find the real cause ourselves
        raise _explain_bad_file(path, error) from error
    return table.to_list()


def read_text(path: Path | str, what: str = "file") -> str:
    """A text file's contents as UTF-8 (optionally .gz); every way it can fail is one TraitmapError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except IsADirectoryError:
        raise TraitmapError(f"{what} is a folder, not a file", file=path) from None
    except FileNotFoundError:
        raise TraitmapError(f"{what} not found", file=path) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise TraitmapError(f"not a valid .gz file: {error}", file=path) from None
    except OSError as error:
        raise TraitmapError(f"cannot read the {what}: {error.strerror or error}", file=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise TraitmapError(f"not UTF-8 text: byte 0x{raw[error.start]:02x} cannot be decoded (save the file as UTF-8)",
                            file=path, line=line) from None


def scan_file(path: Path) -> None:
    """Check a data file the way a user can fix it: encoding, emptiness, and for JSON
    every row's syntax, that it is an object, and that a field keeps one type."""
    text = read_text(path, "data file")
    if not text.strip():
        raise TraitmapError("file is empty", file=path)
    if _builder(path)[0] != "json":
        return
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text, strict=False)
        except json.JSONDecodeError as bad:
            raise TraitmapError(f"malformed JSON: {bad.msg} (column {bad.colno})", file=path, line=bad.lineno) from None
        for index, row in enumerate(rows if isinstance(rows, list) else [rows]):
            if not isinstance(row, dict):
                raise TraitmapError(f"row {index + 1} is a {_kind(row)}, not a JSON object", file=path)
        return
    first_seen: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): strings may hold \x1c, \u2028
        if not line.strip():
            continue
        try:
            row = json.loads(line, strict=False)  # strict=False: raw tabs in strings are fine (pyarrow reads them)
        except json.JSONDecodeError as bad:
            raise TraitmapError(f"malformed JSON: {bad.msg} (column {bad.colno})", file=path, line=number) from None
        if not isinstance(row, dict):
            raise TraitmapError(f"expected a JSON object, found a {_kind(row)}", file=path, line=number)
        for name, value in row.items():
            if value is None:
                continue
            kind = _kind(value)
            seen = first_seen.setdefault(name, (kind, number))
            if seen[0] != kind:
                raise TraitmapError(f"is a {kind} here but a {seen[0]} on line {seen[1]}: a field must keep one type",
                                    file=path, line=number, field=name)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _read_hub(spec: DataSpec, split: str, label_field: str | None, label_values: list | None) -> tuple[list[dict], Origin]:
    hub = spec.hub
    if hub is None:
        raise TraitmapError("this task has no [data.hub] table; pass a data directory instead")
    if split not in hub.splits:
        raise TraitmapError(f"split '{split}' has no hub split; the hub table maps: {', '.join(hub.splits)}")
    import datasets

    origin = Origin(f"hub {hub.id}" + (f" ({hub.config})" if hub.config else "") + f" split {hub.splits[split]}")
    try:
        table = datasets.load_dataset(hub.id, hub.config, split=hub.splits[split])
    except Exception as error:
        raise TraitmapError(f"could not load from the hub: {error}", file=origin.name) from error
    rows = [{hub.fields.get(name, name): value for name, value in row.items()} for row in table.to_list()]
    if hub.label_values is not None and label_field is not None:
        to_local = dict(zip(hub.label_values, label_values or []))
        for row in rows:
            row[label_field] = to_local.get(row.get(label_field), row.get(label_field))
    return rows, origin


def _select(rows: list[dict], where: dict[str, tuple[int, int]], origin: Origin) -> list[dict]:
    for name, (low, high) in where.items():
        for index, row in enumerate(rows):
            if not isinstance(row.get(name), int):
                raise TraitmapError("needs an integer to select this split's rows",
                                    file=origin.name, line=origin.line(index), field=name)
        rows = [row for row in rows if low <= row[name] <= high]
    return rows


def check_rows(rows: list[dict], origin: Origin, *, required: set[str],
               label_field: str | None = None, label_values: list | None = None) -> None:
    """Every row has every field the task reads, and a label from the declared set."""
    for index, row in enumerate(rows):
        for name in sorted(required):
            if row.get(name) is None:
                raise TraitmapError("missing field", file=origin.name, line=origin.line(index), field=name)
        if label_field is not None and row[label_field] not in label_values:
            raise TraitmapError(f"label {row[label_field]!r} is not one of {label_values}",
                                file=origin.name, line=origin.line(index), field=label_field)


def _builder(path: Path) -> tuple[str, dict]:
    suffix = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    if suffix not in _BUILDERS:
        raise TraitmapError(f"unknown file type; use one of {', '.join(_BUILDERS)} (optionally .gz)", file=path)
    return _BUILDERS[suffix], ({"delimiter": "\t"} if suffix == ".tsv" else {})


def _lines(path: Path) -> list[str]:
    """The file's lines as `scan_file` numbers them (split at \\n only)."""
    return read_text(path, "data file").split("\n")


def _is_json_array(path: Path) -> bool:
    for text in _lines(path):
        if text.strip():
            return text.lstrip().startswith("[")
    return False


@contextlib.contextmanager
def _quiet(datasets):
    """Hide the 'Generating rows split' progress bar and its error log for a local read, then restore."""
    was_enabled, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its "Failed to load JSON" lines: we explain instead
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if was_enabled:
            datasets.enable_progress_bars()


def _explain_bad_file(path: Path, error: Exception) -> TraitmapError:
    """`datasets` failed on a file that `scan_file` passed: name the cause in a line."""
    cause = error.__cause__ or error
    message = " ".join(str(cause).split())
    message = re.sub(r"^Failed to (read|load) .*? with error <class '[\w.]+'>: ", "", message)
    return TraitmapError(f"could not read the file: {message[:300]}", file=path)


# ---------------------------------------------------------------- source variants
#
# Examples are traitmap.tasks.Example; only their attributes are used here, so this
# module does not import the task layer.


def subsample(examples: list, n: int, seed: int) -> list:
    """A seeded random sample of n examples, in their original order.

    Labelled examples are sampled stratified: each label keeps its share (and each label
    gets at least one example when n allows), so a small eval is never all one class.
    """
    if n < 0:
        raise TraitmapError(f"sample size must be >= 0, got {n}", field="n")
    if n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    if any(example.label is None for example in examples):
        chosen = rng.sample(range(len(examples)), n)
    else:
        by_label = _indices_by_label(examples)
        chosen = []
        for label, quota in _stratified_quotas({label: len(ids) for label, ids in by_label.items()}, n).items():
            chosen += rng.sample(by_label[label], quota)
    return [examples[index] for index in sorted(chosen)]


def mislabel(examples: list, fraction: float = 1.0, seed: int = 0, *, labels: list[str] | None = None) -> list:
    """Give a seeded `fraction` of the examples a wrong label, target and gold.

    The wrong labels come from a seeded derangement of the label set (each label maps
    to a different one; for two labels, a swap), so every changed example really
    changes and the mapping is consistent. The true label is kept in meta.
    """
    if not 0.0 <= fraction <= 1.0:
        raise TraitmapError(f"fraction must be in [0, 1], got {fraction}", field="fraction")
    _require_labels(examples, "mislabel")
    present = {example.label for example in examples}
    labels = list(labels) if labels else sorted(present)
    if len(labels) < 2 or not present <= set(labels):
        raise TraitmapError(f"mislabel needs at least two labels covering the data's {sorted(present)}, got {labels}",
                            field="labels")
    rng = random.Random(seed)
    order = rng.sample(labels, len(labels))
    wrong = {label: order[(position + 1) % len(order)] for position, label in enumerate(order)}
    changed = set(rng.sample(range(len(examples)), round(fraction * len(examples))))
    return [
        dataclasses.replace(example, label=wrong[example.label], target=wrong[example.label], gold=wrong[example.label],
                            meta={**example.meta, "true_label": example.label})
        if index in changed else example
        for index, example in enumerate(examples)
    ]


def balance(examples: list, seed: int = 0) -> list:
    """Downsample every label to the size of the smallest one."""
    by_label = _indices_by_label(_require_labels(examples, "balance"))
    smallest = min(len(ids) for ids in by_label.values())
    return _take(examples, {label: smallest for label in by_label}, by_label, seed)


def imbalance(examples: list, ratio: dict[str, float], seed: int = 0) -> list:
    """The largest subset whose label shares equal `ratio` (label -> share, summing to 1).

    Labels missing from `ratio` are dropped.
    """
    by_label = _indices_by_label(_require_labels(examples, "imbalance"))
    unknown = set(ratio) - set(by_label)
    if unknown:
        raise TraitmapError(f"labels {sorted(unknown)} not in the data (it has {sorted(by_label)})", field="ratio")
    if any(share < 0 for share in ratio.values()) or abs(sum(ratio.values()) - 1.0) > 1e-6:
        raise TraitmapError(f"shares must be >= 0 and sum to 1, got {ratio}", field="ratio")
    total = min(len(by_label[label]) / share for label, share in ratio.items() if share > 0)
    quotas = {label: min(len(by_label[label]), round(share * total)) for label, share in ratio.items()}
    return _take(examples, quotas, by_label, seed)


def truncate(examples: list, max_chars: int) -> list:
    """Cap each training target at max_chars (cut at the last space when there is one
    near the limit); gold answers are kept, this changes what a source teaches."""
    if max_chars < 1:
        raise TraitmapError(f"max_chars must be >= 1, got {max_chars}", field="max_chars")
    return [dataclasses.replace(example, target=cut_text(example.target, max_chars)) for example in examples]


def cut_text(text: str, max_chars: int, marker: str = "") -> str:
    """Deterministic cut to at most max_chars (+ marker), at a word boundary when one is
    within the last fifth of the limit."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space >= max_chars * 0.8:
        cut = cut[:space]
    return cut.rstrip() + marker


@dataclass(frozen=True)
class Variant:
    """A source variant: the function that makes it and the parameters a study may give it."""

    function: Callable[..., list]
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    choice_only: bool = False  # it changes labels, so only a choice task has it


VARIANTS: dict[str, Variant] = {
    "mislabel": Variant(mislabel, optional=frozenset({"fraction"}), choice_only=True),
    "balance": Variant(balance, choice_only=True),
    "imbalance": Variant(imbalance, required=frozenset({"ratio"}), choice_only=True),
    "subsample": Variant(subsample, required=frozenset({"n"})),
    "truncate": Variant(truncate, required=frozenset({"max_chars"})),
}


def apply_variant(examples: list, spec: dict[str, Any], task, seed: int) -> list:
    """Apply one variant given as data, e.g. {"kind": "mislabel", "fraction": 1.0}."""
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind not in VARIANTS:
        raise TraitmapError(f"unknown variant kind {kind!r}; known: {', '.join(VARIANTS)}", field="kind")
    variant = VARIANTS[kind]
    required, optional = variant.required, variant.optional
    if variant.choice_only and task.kind != "choice":
        raise TraitmapError(f"variant '{kind}' changes labels; task '{task.name}' is a {task.kind} task without labels",
                            field="kind")
    missing, unknown = required - set(params), set(params) - required - optional
    if missing or unknown:
        raise TraitmapError(f"variant '{kind}' takes {sorted(required)} (required) and {sorted(optional)} (optional); "
                            f"missing {sorted(missing)}, unknown {sorted(unknown)}", field=kind)
    if kind == "mislabel":
        return mislabel(examples, seed=seed, labels=task.choices, **params)
    if kind == "truncate":
        return truncate(examples, **params)
    return variant.function(examples, seed=seed, **params)


def _require_labels(examples: list, variant: str) -> list:
    if not examples:
        raise TraitmapError(f"{variant} got no examples")
    if any(example.label is None for example in examples):
        raise TraitmapError(f"{variant} needs labelled examples (a choice task)")
    return examples


def _indices_by_label(examples: list) -> dict[str, list[int]]:
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_label[example.label].append(index)
    return dict(by_label)


def _take(examples: list, quotas: dict[str, int], by_label: dict[str, list[int]], seed: int) -> list:
    rng = random.Random(seed)
    chosen = [index for label, quota in quotas.items() for index in rng.sample(by_label[label], quota)]
    return [examples[index] for index in sorted(chosen)]


def _stratified_quotas(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split n over labels in proportion to their sizes (largest remainder), giving
    each label one example first when n is at least the number of labels."""
    quotas = {label: 1 if n >= len(sizes) else 0 for label in sizes}
    rest = n - sum(quotas.values())
    remaining = {label: size - quotas[label] for label, size in sizes.items()}
    pool = sum(remaining.values())
    shares = {label: rest * size / pool for label, size in remaining.items()}
    for label, share in shares.items():
        quotas[label] += int(share)
    leftover = n - sum(quotas.values())
    by_remainder = sorted(shares, key=lambda label: (-(shares[label] - int(shares[label])), label))
    for label in by_remainder[:leftover]:
        quotas[label] += 1
    return quotas


__all__ = [
    "DataSpec", "SplitFile", "HubSource", "Origin", "read_split", "read_file", "check_rows",
    "subsample", "mislabel", "balance", "imbalance", "truncate", "cut_text", "apply_variant",
]

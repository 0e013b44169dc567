"""The task registry: a task is one TOML file, no code.

    from traitmap import tasks
    task = tasks.get("imdb")                       # built-in, or from extra_dirs
    examples = task.examples("test", "/path/to/data", limit=200, seed=0)

Built-in tasks live in `tasks/builtin/`; a user adds one by dropping `<name>.toml` in a
directory passed as `extra_dirs` (a name may be defined only once), or loads a single
file with `tasks.load_file(path)`. Only Goat needs code (`tasks/goat.py`), because its
data is generated, as the original's was.

TOML schema (docs/tasks.md has the long version)

    name = "flipkart"            # required; must equal the file name without .toml
    description = "..."          # required; say what the data stands for
    tags = ["sentiment", "classification"]
    kind = "choice"              # "choice" | "generate"
    metric = "accuracy"          # choice: "accuracy"; generate: "exact_match",
                                 # "pass@1" (code tests) or "none" (source only)
    can_train = true             # false: refused as a source ...
    train_refusal = "..."        # ... and this says why (required then)

    [data]
    path = "flipkart"            # folder under the data dir (default: name)
    splits = { train = "train.jsonl", test = "test.jsonl" }
        # .jsonl, .json, .csv, .tsv, optionally .gz; or a table per split:
        # test = { file = "mbpp.jsonl", where = { task_id = [11, 510] } }  (inclusive)
    id_field = "row"             # stable example ids (default: "<split>-<index>")
    meta_fields = ["Rate"]       # row fields copied into Example.meta
    coalesce = { solution = ["output", "inv_question_pred_answer"] }
                                 # new field = the first non-empty of these
    generator = "goat"           # instead of files: rows made by code; then
                                 # splits = { train = { size = 20000, seed = 1 }, ... }
    [data.hub]                   # optional: the same data on the Hugging Face hub,
    id = "stanfordnlp/imdb"      # read when data_dir is None
    config = "main"              # optional
    splits = { train = "train", test = "test" }
    fields = { sentence = "text" }   # hub column -> our field
    label_values = [0, 1, 2]     # hub label values in the order of [choice] values

    [prompt]                     # prompt = "{instruction}\\n{input}\\n{cue}:\\n"
    instruction = "..."          # optional; the line is left out when empty
    input = "{premise}\\n{hypothesis}"   # str.format over row fields; a list
                                 # field renders one item per line, {xs[0]} indexes
    cue = "Answer"               # "" = the input alone is the prompt (completion)
    answer = "{answer}"          # generate tasks: the training target
    max_input_chars = 1200       # inputs longer than this are cut (0 = never)

    [choice]                     # kind = "choice"
    label_field = "label"
    values = [0, 1]              # label values in the data, in order
    verbalizers = ["negative", "positive"]  # the answer words (default: str(values))

    [generate]                   # kind = "generate"
    parser = "final_number"      # a name in traitmap.parsers.PARSERS
    gold = "{answer}"            # template of the gold answer
    parse_gold = true            # run the parser over the rendered gold
    max_new_tokens = 512
    stop = ["\\n\\n"]
    tests = "{test}\\ncheck({entry_point})"   # pass@1: run after the code
    code_prefix = "{prompt}"     # pass@1: what the parsed code is appended to
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

from traitmap.errors import TraitmapError
from traitmap.tasks.schema import load_file
from traitmap.tasks.task import Example, Task

BUILTIN_DIR = Path(__file__).parent / "builtin"


def get(name: str, extra_dirs: Iterable[Path | str] = ()) -> Task:
    """The task called `name`, built-in or from one of `extra_dirs`."""
    files = _task_files(extra_dirs)
    if name not in files:
        raise TraitmapError(f"unknown task '{name}'; known tasks: {', '.join(sorted(files))}", field="task")
    return _load_cached(files[name])


def _load_cached(path: Path) -> Task:
    """load_file, read again only when the file changed (a study asks for its tasks often)."""
    stat = path.stat()
    return _load_version(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _load_version(path: Path, mtime_ns: int, size: int) -> Task:
    return load_file(path)


def names(extra_dirs: Iterable[Path | str] = ()) -> list[str]:
    """All task names, sorted; every file is validated on the way."""
    files = _task_files(extra_dirs)
    for path in files.values():
        load_file(path)
    return sorted(files)


def _task_files(extra_dirs: Iterable[Path | str]) -> dict[str, Path]:
    """name -> TOML file over the built-in directory and `extra_dirs`; a name defined
    twice is an error rather than a silent override."""
    files: dict[str, Path] = {}
    for folder in [BUILTIN_DIR, *map(Path, extra_dirs)]:
        if not folder.is_dir():
            raise TraitmapError("task directory not found", file=folder)
        for path in sorted(folder.glob("*.toml")):
            if path.stem in files:
                raise TraitmapError(f"task '{path.stem}' is already defined in {files[path.stem]}; rename one",
                                    file=path, field="name")
            files[path.stem] = path
    return files


__all__ = ["Example", "Task", "get", "names", "load_file", "BUILTIN_DIR"]

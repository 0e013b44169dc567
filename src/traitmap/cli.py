"""The `traitmap` command line. Thin: parse arguments, call the library, print.

User mistakes (TraitmapError), usage errors and failures of the file system (OSError:
a read-only folder, a full disk) are caught once, here, and printed as one line with
exit code 2; `--verbose` adds the traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
import tomllib
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError
from typer.exceptions import Abort, TyperException

from traitmap.console import RunView
from traitmap.errors import TraitmapError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LoRA transfer studies: what does fine-tuning on A do to tasks B, C, D, and why.")
tasks_app = typer.Typer(no_args_is_help=True, help="The task registry.")
app.add_typer(tasks_app, name="tasks")
console = Console(stderr=True)
out_console = Console()
state = {"verbose": False}

OutOpt = typer.Option(None, "--out", "-o", help="Output directory (default: runs/<study name>).")
DataOpt = typer.Option(None, "--data-dir", help="Where task data lives (default: $TRAITMAP_DATA_DIR or the study's data_dir).")
ExecutorOpt = typer.Option(None, "--executor", help="Where jobs run: 'local' (this process) or 'ray' (a Ray cluster; "
                           "pip install 'traitmap[ray]'). Default: the study's [run] executor, else local.")
AddressOpt = typer.Option(None, "--address", help="The Ray cluster to join, e.g. 10.0.0.5:6379 or 'auto' "
                          "(implies --executor ray; default: the study's [run] address, else $RAY_ADDRESS, else a local cluster).")

BackendArgOpt = typer.Option(None, "--backend-arg", metavar="KEY=VALUE",
                             help="An argument for the evaluation backend's constructor, e.g. max_loras=8 (over the "
                             "study's [eval] backend_args; recorded in config.json). Repeat for more.")
UnsandboxedOpt = typer.Option(False, "--unsandboxed-code", help="Run model-written code (MBPP, HumanEval) without the "
                              "bubblewrap sandbox, as you, able to read and change your files; recorded in config.json "
                              "(the study file's [eval] code_execution = \"unsandboxed\" does the same).")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks for errors.")):
    state["verbose"] = verbose
    if not verbose:
        _quiet_libraries()


def _quiet_libraries() -> None:
    """Our own Rich bars show progress; the libraries' per-load bars and deprecation notes are noise."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def _where_to_run(config, executor: Optional[str], address: Optional[str]):
    """The study with --executor and --address laid over its [run] table."""
    import dataclasses

    from traitmap.config import where_to_run

    return dataclasses.replace(config, run=where_to_run(config.run, executor, address))


def parse_backend_args(pairs: list[str]) -> dict:
    """--backend-arg KEY=VALUE pairs as a table; a value is read as a TOML scalar (2, 0.9,
    true, "text"), and text that is not one (bfloat16) as a string."""
    found = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise TraitmapError(f"'{pair}' is not KEY=VALUE, e.g. --backend-arg max_loras=8", field="--backend-arg")
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        if isinstance(value, (list, dict)):
            raise TraitmapError(f"'{pair}': --backend-arg takes one number, true/false or text; write lists and "
                                "tables in the study's [eval] backend_args", field="--backend-arg")
        found[key] = value if isinstance(value, (bool, int, float, str)) else text.strip()
    return found


def _backend_args(config, pairs: Optional[list[str]]):
    """The study with --backend-arg laid over its [eval] backend_args."""
    import dataclasses

    if not pairs:
        return config
    args = {**config.eval.backend_args, **parse_backend_args(pairs)}
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval, backend_args=args))


def _load_study(study_file: Path, out: Optional[Path], data_dir: Optional[str]):
    """The parsed study file, its output folder and data folder; the run validates the rest."""
    from traitmap.config import load, resolve_data_dir

    config = load(study_file)
    resolved_data = resolve_data_dir(config, data_dir)
    return config, (out or Path("runs") / config.name), resolved_data


def _code_execution(config, unsandboxed: bool):
    """The study with --unsandboxed-code applied: the run's config.json records the opt-in."""
    import dataclasses

    if not unsandboxed:
        return config
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval, code_execution="unsandboxed"))


def _run_steps(config, out_dir: Path, data_dir, steps: tuple[str, ...], retrain: tuple[str, ...] = ()):
    """run_study, with a full disk anywhere inside it as one line and no temporaries left."""
    from traitmap import run as runner
    from traitmap.files import full_disk_is_an_error

    with full_disk_is_an_error(out_dir):
        return runner.run_study(config, out_dir, data_dir, events=RunView(console), steps=steps, retrain=retrain)


@contextlib.contextmanager
def _writing(out_dir: Path):
    """For the commands that rewrite a finished study's files: one writer at a time, and a
    full disk as one line."""
    from traitmap.files import full_disk_is_an_error
    from traitmap.plan import read_saved
    from traitmap.store import StudyLock

    read_saved(out_dir)  # a study's folder, before anything is created in it
    lock = StudyLock(out_dir)
    try:
        with full_disk_is_an_error(out_dir):
            yield
    finally:
        lock.release()


def _print_plan(config, out_dir: Path, data_dir: Optional[Path] = None, estimate: bool = True) -> None:
    from traitmap.plan import DB_FILE, make_plan
    from traitmap.store import Store

    store = Store(out_dir / DB_FILE) if (out_dir / DB_FILE).is_file() else None
    plan = make_plan(config, store)
    table = Table(title=f"Plan for study '{config.name}' -> {out_dir}")
    table.add_column("step")
    table.add_column("total", justify="right")
    table.add_column("done", justify="right")
    table.add_column("to do", justify="right")
    table.add_row("train adapters", str(len(plan.adapters)), str(len(plan.done_adapters)), str(len(plan.todo_adapters)))
    table.add_row("evaluate cells", str(len(plan.cells)), str(len(plan.cells) - len(plan.todo_cells)), str(len(plan.todo_cells)))
    out_console.print(table)
    out_console.print(f"base model: {config.base_model}; sources: {', '.join(s.name for s in config.sources)}")
    out_console.print(f"targets: {', '.join(config.targets)}; seeds: {config.seeds}; preset: {config.train.preset}")
    if estimate:
        _print_estimate(config, plan, data_dir, store)
    if store is not None:
        store.close()


def _print_estimate(config, plan, data_dir, store) -> None:
    """The plan's time: tokens from a sample of each task, divided by measured speeds. An estimate."""
    from traitmap.durations import duration
    from traitmap.estimate import estimate_plan

    est = estimate_plan(config, plan, data_dir, store)
    # Fits 80 columns (a pipe, a log, a narrow terminal): no vertical rules, short headers,
    # item names never broken mid-word.
    table = Table(title="Estimated time (an estimate, not a promise)", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, 0))
    for header in ("step", "item", "units", "to do", "tok/unit", "per unit", "time", "speed"):
        table.add_column(header, justify="left" if header in ("step", "item", "speed") else "right", no_wrap=True,
                         overflow="ellipsis")
    for r in est.rows:
        step = {"train": "train", "choice": "score", "generate": "generate"}[r.kind]
        table.add_row(step, escape(r.item), str(r.units_total), str(r.units_todo), f"{r.tokens_per_unit:,.0f}",
                      duration(r.seconds_per_unit, days=True), duration(r.seconds_todo, days=True),
                      "scaled" if r.basis.endswith("*machine") else r.basis)
    out_console.print(table)
    todo, total = duration(est.seconds_todo, days=True), duration(est.seconds_total, days=True)
    out_console.print(f"estimated time: {todo} left of {total} "
                      f"for the whole study (training and evaluation; analyses and report add a few minutes)")
    out_console.print(f"[dim]estimate from {escape(est.speed_source)}; {escape(est.token_source)}[/dim]")
    if any(r.basis.endswith("*machine") for r in est.rows):
        out_console.print("[dim]speed 'scaled': the default or calibrated speed scaled by the speed measured "
                          "in this output folder[/dim]")
    for note in est.notes:
        out_console.print(f"[dim]note: {escape(note)}[/dim]", highlight=False)


@app.command()
def run(study_file: Path, out: Optional[Path] = OutOpt, data_dir: Optional[str] = DataOpt,
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
        analyze: bool = typer.Option(True, help="Run the analyses after the matrix."),
        executor: Optional[str] = ExecutorOpt, address: Optional[str] = AddressOpt,
        backend_arg: Optional[list[str]] = BackendArgOpt, unsandboxed_code: bool = UnsandboxedOpt,
        retrain: Optional[list[str]] = typer.Option(None, "--retrain", help="Train this adapter (a source's name) "
                                                    "again and evaluate its cells again, e.g. when its files are damaged; "
                                                    "the rest of the study is kept. Repeat for more.")):
    """Run a whole study: train, evaluate, matrix, PCA, analyses, report."""
    config, out_dir, resolved_data = _load_study(study_file, out, data_dir)
    config = _where_to_run(_backend_args(_code_execution(config, unsandboxed_code), backend_arg), executor, address)
    if dry_run:
        from traitmap.validate import validate_study

        validate_study(config, resolved_data, out_dir, tuple(retrain or ()))
        _print_plan(config, out_dir, resolved_data)
        return
    steps = ("train", "evaluate", "analyze", "report") if analyze else ("train", "evaluate", "report")
    report = _run_steps(config, out_dir, resolved_data, steps, tuple(retrain or ()))
    out_console.print(f"matrix: {out_dir / 'matrix.csv'}")
    out_console.print(f"report: {report}")


@app.command()
def calibrate(base_model: str = typer.Argument("smollm2-135m", help="A base model alias, hub id or local folder."),
              quick: bool = typer.Option(False, help="Fewer steps and prompts.")):
    """Measure this machine's training, scoring and decoding speeds for `run --dry-run` estimates."""
    from traitmap import speeds

    found = speeds.measure(base_model, quick=quick)
    machine = found["machine"]
    out_console.print(f"{machine['cpu']} ({', '.join(machine['flags']) or 'no wide vector flags'}), "
                      f"{machine['threads']} threads{', ' + machine['gpu'] if 'gpu' in machine else ''}")
    out_console.print(f"training {found['train']:.0f} tokens/s in {found['train_precision']}"
                      + (f" (fp32: {found['train_fp32']:.0f})" if found["train_precision"] != "fp32" else ""))
    out_console.print(f"scoring {found['score']:.0f} prompt tokens/s; decoding {found['decode']:.0f} tokens/s "
                      f"with {found['decode_batch']} rows in flight")
    out_console.print(f"saved: {speeds.speeds_path(base_model, machine)}")


@app.command()
def train(study_file: Path, out: Optional[Path] = OutOpt, data_dir: Optional[str] = DataOpt,
          executor: Optional[str] = ExecutorOpt, address: Optional[str] = AddressOpt):
    """Train the adapters of a study that are not trained yet."""
    config, out_dir, resolved_data = _load_study(study_file, out, data_dir)
    _run_steps(_where_to_run(config, executor, address), out_dir, resolved_data, ("train",))


@app.command()
def evaluate(study_file: Path, out: Optional[Path] = OutOpt, data_dir: Optional[str] = DataOpt,
             executor: Optional[str] = ExecutorOpt, address: Optional[str] = AddressOpt,
             backend_arg: Optional[list[str]] = BackendArgOpt, unsandboxed_code: bool = UnsandboxedOpt):
    """Evaluate the base model and every trained adapter on every target not evaluated yet."""
    config, out_dir, resolved_data = _load_study(study_file, out, data_dir)
    config = _where_to_run(_backend_args(_code_execution(config, unsandboxed_code), backend_arg), executor, address)
    _run_steps(config, out_dir, resolved_data, ("evaluate",))


@app.command()
def matrix(out_dir: Path, gains: bool = typer.Option(False, help="Show gains over the base model.")):
    """Write matrix.csv and gains.csv from the finished cells and print the matrix."""
    from traitmap import run as runner
    from traitmap.results import Study

    study = Study.load(out_dir)
    with _writing(study.out_dir):
        runner.write_matrix_files(study.out_dir, study.matrix)
    frame = study.gains if gains else study.matrix
    out_console.print(frame.round(3).to_string())


@app.command()
def pca(out_dir: Path, on: Optional[str] = typer.Option(None, help="'gains' or 'scores' (default: the study's [analysis] pca_on, else gains)."),
        standardize: Optional[bool] = typer.Option(None, help="Scale each task to unit variance (default: the study's setting)."),
        n_components: Optional[int] = typer.Option(None, min=1, help="Number of components (default: the study's setting, else 4).")):
    """PCA of the transfer matrix -> pca.json, pca_loadings.csv, pca_scores.csv."""
    from traitmap.analysis import pca as trait_pca
    from traitmap.results import Study

    study = Study.load(out_dir)
    with _writing(study.out_dir):
        result = trait_pca.fit_study(study, n_components=n_components, on=on, standardize=standardize)
        trait_pca.write(result, study.out_dir)
    for name, ratio in result.explained_variance_ratio_.items():
        top = result.loadings_.loc[name].abs().sort_values(ascending=False).index[:3]
        out_console.print(f"{name}: {ratio:.1%} of variance; top tasks: {', '.join(top)}")


@app.command()
def analyze(out_dir: Path, only: Optional[list[str]] = typer.Option(None, "--only", help="Run only these analyses.")):
    """Run the analyses (uncertainty, traits, lengths, classes, similarity, dependency, prediction)."""
    from traitmap import analysis
    from traitmap.results import Study

    analysis.check_names(only)
    study = Study.load(out_dir)
    with _writing(study.out_dir):
        written = analysis.run_all(study, only=only, note=RunView(console).note)
    skipped = analysis.skipped_reasons(study)
    for name, paths in written.items():
        files = ", ".join(p.name for p in paths)
        reason = f"skipped: {skipped[name]}" if name in skipped else ""
        out_console.print(f"{name}: {'; '.join(filter(None, [files, reason])) or 'nothing to do for this study'}",
                          highlight=False)


@app.command()
def report(out_dir: Path):
    """(Re)build report/index.html from the study's saved results."""
    from traitmap.report import build_report
    from traitmap.results import Study

    study = Study.load(out_dir)
    with _writing(study.out_dir):
        path = build_report(study, Path(out_dir))
    out_console.print(f"report: {path}")


@app.command()
def export(out_dir: Path, dest: Path = typer.Argument(..., help="The folder to write (an earlier export there is replaced).")):
    """Copy a finished study's results to DEST without its store and adapters, ready to publish."""
    from traitmap.export import export_study, folder_size
    from traitmap.results import Study

    study = Study.load(out_dir)
    path = export_study(study, dest)
    out_console.print(f"exported: {path} ({folder_size(path) / 2**20:.1f} MiB)")


@app.command()
def findings(folders: list[Path] = typer.Argument(..., help="Study folders (run or exported), as the text should name them."),
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the findings here (Markdown) instead of printing them."),
             readme: Optional[Path] = typer.Option(None, "--readme", help="Also rewrite this README's generated results block.")):
    """Test the paper's claims on finished studies: a number, an interval and a verdict per claim."""
    from traitmap.findings import generate
    from traitmap.files import write_atomic

    markdown, readme_text = generate([str(f) for f in folders], readme)
    if out is None:
        out_console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    else:
        write_atomic(out, markdown)
        out_console.print(f"findings: {out}")
    if readme is not None:
        write_atomic(readme, readme_text)
        out_console.print(f"results block rewritten: {readme}")


@app.command()
def predict(out_dir: Path, new_source: str = typer.Argument(..., help="A task name or a task TOML file not trained on."),
            data_dir: Optional[str] = typer.Option(None, "--data-dir", help="The folder the new source's data lives in "
                                                   "(default: the study's data folder, else $TRAITMAP_DATA_DIR).")):
    """Predict the gain of training on NEW_SOURCE for each target of a finished study (a run folder or an export)."""
    from traitmap import tasks as registry
    from traitmap.analysis.predict import TrainedSources
    from traitmap.report.common import points

    folder = None if data_dir is None or data_dir == "hub" else Path(data_dir)
    if folder is not None and not folder.is_dir():
        raise TraitmapError(f"data directory '{folder}' does not exist (from --data-dir)", field="--data-dir")
    trained = TrainedSources.of_folder(out_dir, folder)
    config = trained.config
    task = (registry.load_file(Path(new_source)) if new_source.endswith(".toml")
            else registry.get(new_source, extra_dirs=config.task_dirs))
    already = trained.measured(task.name)
    if already is not None:
        gains = trained.gains.loc[already]
        out_console.print(f"{task.name} is already a source of this study (adapter {escape(already)}): its measured "
                          "gains, not a prediction:", highlight=False)
        for target, gain in gains.items():
            out_console.print(f"  {escape(str(target))}: {points(gain)} points", highlight=False)
        return
    task.check_trainable()
    examples = task.examples("train", trained.data_dir, limit=config.train.examples, seed=config.seed)
    ranking = trained.predict(examples)
    beats = int(ranking["beats_mean"].sum())
    mae, base_mae = ranking["loso_mae"].mean() * 100, ranking["baseline_mae"].mean() * 100
    verdict = ("beat" if mae < base_mae else "did not beat")
    out_console.print(f"Leave-one-source-out check over {len(trained.features)} sources: the model {verdict} the mean "
                      f"of the other sources (off by {mae:.1f} points on average, the mean by {base_mae:.1f}); it beat "
                      f"the mean on {beats} of {len(ranking)} targets.", highlight=False)
    table = Table(title=f"Gain of training on {escape(task.name)}, in points", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False)
    for header in ("target", "predicted", "mean", "error", "mean error"):
        table.add_column(header, justify="left" if header == "target" else "right", no_wrap=True)
    for target, row in ranking.sort_values(["beats_mean", "predicted_gain"], ascending=False).iterrows():
        predicted = points(row["predicted_gain"]) if row["beats_mean"] else "no better than mean"
        table.add_row(escape(str(target)), predicted, points(row["mean_gain"]), f"{row['loso_mae'] * 100:.1f}",
                      f"{row['baseline_mae'] * 100:.1f}")
    out_console.print(table)
    out_console.print("A prediction is shown only where, for the trained sources held out one at a time, it missed "
                      "by less than the other sources' mean gain (mean) did; errors are mean absolute misses in points.",
                      highlight=False)


# ---------------------------------------------------------------------------------------
# init, status, compare: starting a study, watching it, comparing two

@app.command()
def init(path: Path = typer.Argument(Path("study.toml"), help="The study file to write (refused if it exists)."),
         model: str = typer.Option("smollm2-135m", "--model", help="Base model: smollm2-135m, gemma3-270m, a hub id or a local folder."),
         sources: Optional[str] = typer.Option(None, "--sources", help="Comma-separated source tasks (default: imdb,flipkart)."),
         targets: Optional[str] = typer.Option(None, "--targets", help="Comma-separated target tasks (default: the sources plus amazon_polarity)."),
         data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data folder (or 'hub') to write into the file."),
         task_dir: Optional[list[str]] = typer.Option(None, "--task-dir", help="A folder of your own task TOML files.")):
    """Write a commented study file to start a study on your own datasets."""
    import shlex
    import tomllib

    from traitmap import models
    from traitmap.config import new_study_text, parse
    from traitmap import tasks as registry
    from traitmap.files import write_atomic

    if path.exists():
        raise TraitmapError(f"{path} already exists: init never overwrites a file")

    def split(text: str) -> list[str]:
        return [x.strip() for x in text.split(",") if x.strip()]

    source_list = split(sources) if sources else ["imdb", "flipkart"]
    target_list = split(targets) if targets else list(dict.fromkeys(source_list + ["amazon_polarity"]))
    text = new_study_text(path, model=model, sources=source_list, targets=target_list, data_dir=data_dir,
                          task_dirs=task_dir or [])
    config = parse(tomllib.loads(text), path=path, text=text)  # never write an invalid file
    write_atomic(path, text)
    out_console.print(f"wrote {path}: {len(source_list)} sources, {len(target_list)} targets, base model {model}")
    known = set(registry.names(extra_dirs=config.task_dirs))
    for t in dict.fromkeys(source_list + target_list):
        if t not in known:
            console.print(f"[yellow]warning:[/yellow] '{t}' is not a known task yet: write {t}.toml in a task folder "
                          "and list it in task_dirs (see docs/tutorial.md)", highlight=False)
    if model not in models.PACKAGED and not Path(model).expanduser().exists() and "/" not in model:
        console.print(f"[yellow]warning:[/yellow] base model '{model}' is neither {', '.join(models.PACKAGED)}, "
                      "a Hugging Face id nor an existing folder", highlight=False)
    out_console.print(f"next: traitmap run {shlex.quote(str(path))} --dry-run")


def _fmt(value: float, signed: bool = False) -> str:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "[dim]NaN[/dim]"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if signed and value > 1e-9:
        return f"[green]{text}[/green]"
    if signed and value < -1e-9:
        return f"[red]{text}[/red]"
    return text


def _frame_table(frame, title: str, signed: bool = False, index_name: str = "model") -> Table:
    table = Table(title=title)
    table.add_column(index_name)
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    for idx, row in frame.iterrows():
        table.add_row(escape(str(idx)), *(_fmt(v, signed) for v in row))
    return table


@app.command()
def status(out_dir: Path):
    """A study's progress: adapters trained, cells evaluated, scores so far, last run, report."""
    from traitmap.durations import duration
    from traitmap.status import study_status

    st = study_status(out_dir)
    if st.running is not None:
        state_word = f"[yellow]running (pid {st.running})[/yellow]" if st.running > 0 else "[yellow]running[/yellow]"
    elif st.complete:
        state_word = "[green]complete[/green]"
    elif st.work_done:
        state_word = "[yellow]stopped after training and evaluation: the last run did not finish its analyses and report[/yellow]"
    else:
        state_word = "[yellow]stopped[/yellow]" if st.last_run and not st.last_run["finished"] else "[yellow]in progress or stopped[/yellow]"
    out_console.print(f"study [bold]{escape(st.name)}[/bold] (base model {escape(st.base_model)}) in {escape(str(st.out_dir))}: {state_word}")
    table = Table()
    for col in ("step", "done", "total", "left"):
        table.add_column(col, justify="left" if col == "step" else "right")
    table.add_row("adapters trained", str(st.adapters_done), str(st.adapters_total), str(st.adapters_total - st.adapters_done))
    table.add_row("cells evaluated", str(st.cells_done), str(st.cells_total), str(st.cells_total - st.cells_done))
    out_console.print(table)
    if st.adapters_todo:
        out_console.print("not trained yet: " + ", ".join(f"{n} (seed {s})" for n, s in st.adapters_todo), highlight=False)
    out_console.print(_frame_table(st.matrix, "Scores so far (NaN = not evaluated yet)"))
    if st.last_run is None:
        out_console.print("runs: none recorded")
    else:
        r = st.last_run
        finished = r["finished"] or ("[yellow]not yet (still running)[/yellow]" if st.running is not None
                                     else "[yellow]never finished (killed or failed)[/yellow]")
        out_console.print(f"last run ({st.runs} in all): {r['command']}; started {r['started']}, finished {finished}"
                          + (f", {duration(r['seconds'], days=True)}" if r["seconds"] is not None else ""))
        if r["finished"] and not st.complete:
            out_console.print("[dim]the last run ended before the study was complete (interrupted, failed, "
                              "or run for some steps only)[/dim]")
    out_console.print(f"time spent on finished work: {duration(st.seconds_spent, days=True)} (training + evaluation)")
    out_console.print(f"report: {st.report}" if st.report else "report: not built yet (`traitmap report OUT` builds it from what is done)")
    if not st.complete and st.running is None:
        out_console.print("to finish: rerun the same `traitmap run` command; finished work is kept")


@app.command()
def compare(out_a: Path, out_b: Path,
            csv: Optional[Path] = typer.Option(None, "--csv", help="Write the aligned comparison (one row per model and target).")):
    """Two studies side by side (e.g. two base models): scores, differences, gains, per-target summary."""
    from traitmap.compare import compare_studies

    c = compare_studies(out_a, out_b)
    out_console.print(f"A = [bold]{escape(c.label_a)}[/bold] ({escape(str(out_a))}), B = [bold]{escape(c.label_b)}[/bold] ({escape(str(out_b))}); "
                      f"{len(c.models) - 1} common adapters, {len(c.targets)} common targets")
    for side, only in (("A", c.only_a), ("B", c.only_b)):
        if only["models"] or only["targets"]:
            out_console.print(f"[dim]only in {side} (left out): {escape(', '.join(only['models'] + only['targets']))}[/dim]")
    scores = Table(title="Scores: A / B")
    scores.add_column("model")
    for t in c.targets:
        scores.add_column(t, justify="right")
    for m in c.models:
        scores.add_row(escape(m), *(f"{_fmt(c.a.loc[m, t])} / {_fmt(c.b.loc[m, t])}" for t in c.targets))
    out_console.print(scores)
    out_console.print(_frame_table(c.diff, "Difference: B - A", signed=True))
    out_console.print(_frame_table(c.gains_a, f"Gains over its base model: A ({escape(c.label_a)})", signed=True))
    out_console.print(_frame_table(c.gains_b, f"Gains over its base model: B ({escape(c.label_b)})", signed=True))
    summary = c.summary()
    for row in summary.itertuples():
        if row.gains_more == "n/a":
            line = "not evaluated in both studies yet"
        elif row.gains_more == "tie":
            line = f"adapters gain the same on average in both ({row.mean_gain_a:+.3f})"
        else:
            line = (f"{row.gains_more}'s adapters gain more on average ({row.mean_gain_a:+.3f} in A vs "
                    f"{row.mean_gain_b:+.3f} in B, B - A {row.difference:+.3f}, over {row.adapters} adapters)")
        out_console.print(f"{escape(row.target)}: {escape(line)}", highlight=False)
    if csv is not None:
        from traitmap.files import write_csv

        frame = c.long()
        frame.insert(0, "study_b", c.label_b)
        frame.insert(0, "study_a", c.label_a)
        write_csv(csv, frame)
        out_console.print(f"comparison: {csv}")


@tasks_app.command("list")
def tasks_list(task_dir: Optional[list[str]] = typer.Option(None, "--task-dir", help="Extra folders of task files.")):
    """List the known tasks."""
    from traitmap import tasks as registry

    # One line per task at 80 columns: the description is cut, `tasks show NAME` prints it whole.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=True)
    for col in ("name", "kind", "metric", "tags", "description"):
        table.add_column(col, no_wrap=True, overflow="ellipsis",
                         ratio={"tags": 1, "description": 2}.get(col))
    for name in registry.names(extra_dirs=task_dir or ()):
        t = registry.get(name, extra_dirs=task_dir or ())
        table.add_row(escape(t.name), t.kind, t.metric, escape(", ".join(t.tags)), escape(t.description))
    out_console.print(table)


@tasks_app.command("show")
def tasks_show(name: str, data_dir: Optional[str] = DataOpt, split: str = "test",
               task_dir: Optional[list[str]] = typer.Option(None, "--task-dir")):
    """Show a task and one rendered example prompt and answer, after checking every row of the split."""
    from traitmap import tasks as registry
    from traitmap.config import choose_data_dir

    task = registry.get(name, extra_dirs=task_dir or ())
    source = choose_data_dir(data_dir, none_given="pass --data-dir or set TRAITMAP_DATA_DIR to render an example")
    checked = len(task.examples(split, source, seed=0))  # every row read and validated, as documented
    example = task.examples(split, source, limit=1, seed=0)[0]  # the same example a study would sample first
    out_console.print(f"[bold]{task.name}[/bold] ({task.kind}, {task.metric}; tags: {', '.join(task.tags)})")
    out_console.print(task.description)
    if task.kind == "choice":
        out_console.print(f"choices: {task.choices}")
    out_console.rule("prompt")
    out_console.print(example.prompt, markup=False, highlight=False, soft_wrap=True)  # verbatim, not re-wrapped
    out_console.rule("answer (training target)")
    out_console.print(example.target, markup=False, highlight=False, soft_wrap=True)
    out_console.rule(f"gold: {example.gold}")
    out_console.print(f"checked {checked:,} rows of the {split} split", highlight=False)


def _error(message: str) -> None:
    if state["verbose"]:
        console.print_exception()
    line = " ".join(message.split())  # one line, whatever the message holds
    console.print(f"[red]error:[/red] {escape(line)}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(2)


def _usage_error(e: TyperException) -> str:
    """A Typer/Click usage error as one line, with where to find help."""
    context = getattr(e, "ctx", None)
    command = context.command_path if context is not None else "traitmap"
    return f"{e.format_message()} (see `{command} --help`)"


def entrypoint() -> None:
    try:
        code = app(prog_name="traitmap", standalone_mode=False)
    except NoArgsIsHelpError as e:
        e.show()  # `traitmap` alone prints its help
        sys.exit(2)
    except TraitmapError as e:
        _error(str(e))
    except TyperException as e:  # usage errors: unknown option, missing argument, bad value
        _error(_usage_error(e))
    except OSError as e:  # a file system failure the library did not name: still one line, naming the path
        where = ", ".join(str(f) for f in (e.filename, e.filename2) if f)
        _error(f"{where}: {e.strerror or e}" if where else str(e) or type(e).__name__)
    except (KeyboardInterrupt, Abort):
        console.print("[yellow]interrupted: finished work is kept; rerun the same command to resume[/yellow]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    entrypoint()

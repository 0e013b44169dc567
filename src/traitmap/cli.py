"""The `traitmap` command line. Thin: parse arguments, call the library, print.

User mistakes (TraitmapError) are caught once, here, and printed as one line with exit
code 2; `--verbose` adds the traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from traitmap.errors import TraitmapError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LoRA transfer studies: what does fine-tuning on A do to tasks B, C, D, and why.")
tasks_app = typer.Typer(no_args_is_help=True, help="The task registry.")
app.add_typer(tasks_app, name="tasks")
console = Console(stderr=True)
out_console = Console()
state = {"verbose": False}

OutOpt = typer.Option(None, "--out", "-o", help="Output directory (default: runs/<study name>).")
DataOpt = typer.Option(None, "--data-dir", help="Where task data lives (default: $TRAITMAP_DATA_DIR or the study's data_dir).")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks for errors.")):
    state["verbose"] = verbose


def _load_study(study_file: Path, out: Optional[Path], data_dir: Optional[str]):
    from traitmap import study as study_mod
    from traitmap.run import check_tasks

    config = study_mod.load(study_file)
    check_tasks(config)
    resolved_data = study_mod.resolve_data_dir(config, data_dir)
    return config, (out or Path("runs") / config.name), resolved_data


def _print_plan(config, out_dir: Path) -> None:
    from traitmap.run import DB_FILE, make_plan
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


@app.command()
def run(study_file: Path, out: Optional[Path] = OutOpt, data_dir: Optional[str] = DataOpt,
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
        analyze: bool = typer.Option(True, help="Run the analyses after the matrix.")):
    """Run a whole study: train, evaluate, matrix, PCA, analyses, report."""
    from traitmap import run as runner

    config, out_dir, resolved_data = _load_study(study_file, out, data_dir)
    if dry_run:
        _print_plan(config, out_dir)
        return
    steps = ("train", "evaluate", "analyze", "report") if analyze else ("train", "evaluate", "report")
    report = runner.run_study(config, out_dir, resolved_data, console=console, steps=steps)
    out_console.print(f"matrix: {out_dir / 'matrix.csv'}")
    out_console.print(f"report: {report}")


@app.command()
def train(study_file: Path, out: Optional[Path] = OutOpt, data_dir: Optional[str] = DataOpt):
    """Train the adapters of a study that are not trained yet."""
    from traitmap import run as runner

    config, out_dir, resolved_data = _load_study(study_file, out, data_dir)
    runner.run_study(config, out_dir, resolved_data, console=console, steps=("train",))


@app.command()
def evaluate(study_file: Path, out: Optional[Path] = OutOpt, data_dir: Optional[str] = DataOpt):
    """Evaluate the base model and every trained adapter on every target not evaluated yet."""
    from traitmap import run as runner

    config, out_dir, resolved_data = _load_study(study_file, out, data_dir)
    runner.run_study(config, out_dir, resolved_data, console=console, steps=("evaluate",))


@app.command()
def matrix(out_dir: Path, gains: bool = typer.Option(False, help="Show gains over the base model.")):
    """Write matrix.csv and gains.csv from the finished cells and print the matrix."""
    from traitmap import run as runner
    from traitmap.api import Study

    study = Study.load(out_dir)
    runner.write_matrix_files(study.out_dir, study.matrix)
    frame = study.gains if gains else study.matrix
    out_console.print(frame.round(3).to_string())


@app.command()
def pca(out_dir: Path, on: str = typer.Option("gains", help="'gains' or 'scores'."),
        standardize: bool = typer.Option(False, help="Scale each task to unit variance."),
        n_components: int = typer.Option(4, help="Number of components.")):
    """PCA of the transfer matrix -> pca.json (explained variance, loadings, trait profiles)."""
    from traitmap import run as runner
    from traitmap.api import Study

    result = runner.write_pca(Study.load(out_dir), on=on, standardize=standardize, n_components=n_components)
    for name, ratio in result.explained_variance_ratio_.items():
        top = result.loadings_.loc[name].abs().sort_values(ascending=False).index[:3]
        out_console.print(f"{name}: {ratio:.1%} of variance; top tasks: {', '.join(top)}")


@app.command()
def analyze(out_dir: Path, only: Optional[list[str]] = typer.Option(None, "--only", help="Run only these analyses.")):
    """Run the analyses (uncertainty, traits, lengths, classes, similarity, dependency, prediction)."""
    from traitmap import analysis
    from traitmap.api import Study

    for name, paths in analysis.run_all(Study.load(out_dir), only=only, console=console).items():
        out_console.print(f"{name}: {', '.join(p.name for p in paths) or 'nothing to do for this study'}")


@app.command()
def report(out_dir: Path):
    """(Re)build report/index.html from the study's saved results."""
    from traitmap.api import Study
    from traitmap.report import build_report

    out_console.print(f"report: {build_report(Study.load(out_dir), Path(out_dir))}")


@app.command()
def predict(out_dir: Path, new_source: str = typer.Argument(..., help="A task name or a task TOML file not trained on.")):
    """Rank the study's targets by the predicted gain of training on NEW_SOURCE."""
    from traitmap import tasks as registry
    from traitmap.analysis.predict import predict_new_source
    from traitmap.api import Study

    study = Study.load(out_dir)
    task = registry.load_file(Path(new_source)) if new_source.endswith(".toml") else study.task(new_source)
    task.check_trainable()
    examples = task.examples("train", study.data_dir, limit=study.config.train.examples, seed=study.config.seed)
    out_console.print(predict_new_source(study, examples).to_string())


@tasks_app.command("list")
def tasks_list(task_dir: Optional[list[str]] = typer.Option(None, "--task-dir", help="Extra folders of task files.")):
    """List the known tasks."""
    from traitmap import tasks as registry

    table = Table()
    for col in ("name", "kind", "metric", "tags", "description"):
        table.add_column(col)
    for name in registry.names(extra_dirs=task_dir or ()):
        t = registry.get(name, extra_dirs=task_dir or ())
        table.add_row(t.name, t.kind, t.metric, ", ".join(t.tags), t.description)
    out_console.print(table)


@tasks_app.command("show")
def tasks_show(name: str, data_dir: Optional[str] = DataOpt, split: str = "test",
               task_dir: Optional[list[str]] = typer.Option(None, "--task-dir")):
    """Show a task and one rendered example prompt and answer."""
    import os

    from traitmap import tasks as registry

    task = registry.get(name, extra_dirs=task_dir or ())
    out_console.print(f"[bold]{task.name}[/bold] ({task.kind}, {task.metric}; tags: {', '.join(task.tags)})")
    out_console.print(task.description)
    if task.kind == "choice":
        out_console.print(f"choices: {task.choices}")
    folder = data_dir or os.environ.get("TRAITMAP_DATA_DIR")
    if not folder:
        raise TraitmapError("pass --data-dir or set TRAITMAP_DATA_DIR to render an example")
    example = task.examples(split, Path(folder), limit=1, seed=0)[0]
    out_console.rule("prompt")
    out_console.print(example.prompt, markup=False, highlight=False)
    out_console.rule("answer (training target)")
    out_console.print(example.target, markup=False, highlight=False)
    out_console.rule(f"gold: {example.gold}")


def entrypoint() -> None:
    try:
        app(standalone_mode=False)
    except TraitmapError as e:
        if state["verbose"]:
            console.print_exception()
        console.print(f"[red]error:[/red] {e}", highlight=False, markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished work is kept; rerun the same command to resume[/yellow]")
        sys.exit(130)

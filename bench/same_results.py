"""Did a change alter results? Trains and evaluates a study with whatever traitmap is on
sys.path and writes matrix.csv and the sorted records, to compare byte for byte with
another version's:

    PYTHONPATH=<old checkout>/src python bench/same_results.py before DATA_DIR [STUDY]
    PYTHONPATH=src python bench/same_results.py after DATA_DIR [STUDY]
    cmp before/run/matrix.csv after/run/matrix.csv && cmp before/records.csv after/records.csv

Without STUDY it runs the micro study on the tiny random model of `traitmap.testing`
(seconds); with a study file, that study (studies/quickstart.toml: about 10 minutes on a
2-core CPU). A version from before `traitmap.config` reads the study with `traitmap.study`
and takes a console."""
import importlib.util
import inspect
import io
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import torch

# The micro study and tiny model come from this checkout, whatever version is under test
# (older ones have no traitmap.testing), so every version runs on the same bytes.
_spec = importlib.util.spec_from_file_location("micro", Path(__file__).parents[1] / "src/traitmap/testing.py")
micro = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(micro)


def main(out: str, data_dir: str, study: str | None = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if study is None:
        torch.set_num_threads(1)
        model = micro.tiny_model(out / "tiny-model")
        study_file = out / "micro.toml"
        study_file.write_text(micro.MICRO_STUDY.format(model=model))
    else:
        study_file = Path(study)
    try:
        from traitmap.config import load
    except ImportError:
        from traitmap.study import load
    from traitmap import run
    config = load(study_file)
    options = {}
    if "console" in inspect.signature(run.run_study).parameters:
        from rich.console import Console
        options["console"] = Console(file=io.StringIO())
    run.run_study(config, out / "run", Path(data_dir), steps=("train", "evaluate"), **options)
    with sqlite3.connect(out / "run" / "traitmap.sqlite") as db:
        records = pd.read_sql("select * from records", db)
    records.sort_values(list(records.columns[:4])).to_csv(out / "records.csv", index=False)
    print(run.__file__)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Wall time of a small study's training and evaluation on a local Ray cluster of 1, 2, ... workers.

Each cluster has N CPUs, so N training tasks and N evaluation actors run at once; every
run starts from a fresh cluster (its workers import torch when they take their first job),
and the local executor is timed alongside for reference. The model is a tiny random Llama
(`traitmap.testing.tiny_model`), so the times are dominated by process start-up and Python
overhead rather than by the model: this measures the executor, not the model.

Usage: python bench/ray_workers.py [--workers 1 2] [--repeats 1] [--model DIR]
(TRAITMAP_DATA_DIR must point at the data directory.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from traitmap.testing import tiny_model

STUDY = '''name = "ray-bench"
base_model = "{model}"
sources = ["flipkart", "gsm8k", "imdb", "goat"]
targets = ["imdb", "gsm8k", "goat", "flipkart"]

[train]
steps = 8
examples = 32
batch_size = 4
max_length = 64

[eval]
examples = 16
batch_size = 8
max_new_tokens = {{gsm8k = 8, goat = 8}}
'''


def timed_run(config, out: Path, data_dir: Path, executor: str) -> float:
    import dataclasses

    from traitmap import run
    from traitmap.config import where_to_run

    config = dataclasses.replace(config, run=where_to_run(config.run, executor, None))
    start = time.perf_counter()
    run.run_study(config, out, data_dir, steps=("train", "evaluate"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", type=Path, help="a model folder (default: a tiny random model built here)")
    args = parser.parse_args()

    import ray
    import torch

    from traitmap.config import load

    torch.set_num_threads(1)  # as the Ray workers (1 CPU each): the local run is one worker
    data_dir = Path(os.environ["TRAITMAP_DATA_DIR"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "model")
        (tmp / "study.toml").write_text(STUDY.format(model=model))
        config = load(tmp / "study.toml")
        print(f"machine: {os.cpu_count()} CPUs; study: {len(config.sources)} adapters, "
              f"{(len(config.sources) + 1) * len(config.targets)} cells")
        times: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            times.setdefault("local", []).append(timed_run(config, tmp / f"local-{repeat}", data_dir, "local"))
            print(f"local executor: {times['local'][-1]:.1f} s", flush=True)
            for n in args.workers:
                ray.init(address="local", num_cpus=n, include_dashboard=False, log_to_driver=False)
                try:
                    times.setdefault(f"ray x{n}", []).append(timed_run(config, tmp / f"ray{n}-{repeat}", data_dir, "ray"))
                finally:
                    ray.shutdown()
                print(f"ray, {n} worker(s): {times[f'ray x{n}'][-1]:.1f} s", flush=True)
        best = {k: min(v) for k, v in times.items()}
        print("best of", args.repeats, {k: round(v, 1) for k, v in best.items()})
        one = best.get("ray x1")
        for n in args.workers:
            if one and n > 1:
                print(f"speed-up of {n} workers over 1: {one / best[f'ray x{n}']:.2f}x (target >= {0.8 * n:.1f}x)")


if __name__ == "__main__":
    main()

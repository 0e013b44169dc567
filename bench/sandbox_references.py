"""How long each pass@1 task's reference solutions take in the sandbox, to set the
task's `[generate] timeout` from them (a reference that times out would score a correct
answer as wrong).

Usage: python bench/sandbox_references.py [TASK ...]   (default: every pass@1 task)
Prints, per task and split: the slowest references, the maximum and the 99th percentile,
and the timeout the task file sets.
"""

from __future__ import annotations

import os
import sys
import time

from traitmap import tasks

LIMIT_S = 120.0  # generous: we want the reference's real time, not a timeout


def measure(task, split: str, data_dir: str) -> list[tuple[float, str, bool]]:
    times = []
    for example in task.examples(split, data_dir):
        start = time.perf_counter()
        result = task.run_tests(task.parse(f"```python\n{example.target}\n```") or example.target, example, timeout=LIMIT_S)
        times.append((time.perf_counter() - start, example.id, result.passed))
    return sorted(times, reverse=True)


def main(names: list[str]) -> None:
    data_dir = os.environ["TRAITMAP_DATA_DIR"]
    names = names or [name for name in tasks.names() if tasks.get(name).metric == "pass@1"]
    for name in names:
        task = tasks.get(name)
        times = measure(task, "test", data_dir)
        p99 = times[max(0, len(times) // 100 - 1)][0]
        slowest = ", ".join(f"{example_id} {seconds:.2f}s{'' if passed else ' (fails)'}" for seconds, example_id, passed in times[:5])
        print(f"{name} test: {len(times)} references; max {times[0][0]:.2f} s, p99 {p99:.2f} s; slowest: {slowest}; "
              f"task timeout {task.generate.timeout:g} s")


if __name__ == "__main__":
    main(sys.argv[1:])

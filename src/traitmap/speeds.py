"""This machine's own speeds, for time estimates: `traitmap calibrate` measures them once
per machine and base model with the real engine and keeps them in the cache.

Machines differ (an AVX2-only CPU emulates bf16; AMX runs it natively; a GPU is another
world), so an estimate made from another machine's numbers can be off by 10x. The key
names the processor, the flags that change which kernels run, the thread count and the
GPU, so a cache shared between machines never hands one machine another's speeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from traitmap.files import write_json

# CPU flags that change which matrix kernels run (and so the speed).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "asimd", "sve")
WORDS = ("the model reads a long review of a product and decides whether the buyer liked it or not "
         "because the answer depends on every sentence of the text").split()


def cpu_description() -> dict:
    """The processor's name and the kernel-relevant flags it has (Linux; elsewhere the platform's word)."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    return {"cpu": name, "flags": [f for f in KERNEL_FLAGS if f in flags], "cores": os.cpu_count()}


def machine_description() -> dict:
    import torch

    found = {**cpu_description(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name(0)
    return found


def speeds_path(base_model: str, machine: dict | None = None) -> Path:
    from traitmap.models import cache_root

    machine = machine or machine_description()
    key = hashlib.sha256(json.dumps([base_model, machine], sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "speeds" / f"{key}.json"


def load(base_model: str) -> dict | None:
    """Calibrated speeds of this machine for this base model, or None if never measured."""
    path = speeds_path(base_model)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _text(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(n_words))


def measure(base_model: str, *, quick: bool = False) -> dict:
    """Measure and save this machine's training, scoring and decoding speeds (tokens/s).

    Training runs the study's trainer in the precision "auto" picks here (and in fp32
    too when that is bf16, for comparison); scoring and decoding run the `auto` backend
    with the batch sizes a study uses. Takes about a minute on 2 CPU cores.
    """
    from traitmap import backends, models
    from traitmap.backends.base import Request
    from traitmap.config import PRESETS, TrainConfig
    from traitmap.tasks import Example
    from traitmap.train import steady_tokens_per_second, train_adapter, training_precision

    model_dir = models.resolve(base_model)
    machine = machine_description()
    where = models.device()
    result: dict = {"base_model": base_model, "machine": machine,
                    "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    examples = [Example(id=str(i), prompt=_text(50, i) + "\nAnswer:\n", target=_text(40, i + 1), gold="",
                        input_text="") for i in range(64)]
    steps = 2 if quick else 4
    precisions = [training_precision("auto", where)]
    if precisions[0] != "fp32":
        precisions.append("fp32")
    for precision in precisions:
        cfg = TrainConfig(preset="cpu", **{**PRESETS["cpu"], "steps": steps + 1, "batch_size": 4, "max_length": 128,
                                           "precision": precision, "warmup_steps": 0})
        result[f"train_{precision}"] = steady_tokens_per_second(train_adapter(model_dir, examples, cfg, 0).log["log"])
    result["train_precision"] = precisions[0]
    result["train"] = result[f"train_{precisions[0]}"]

    backend = backends.get("auto")(model_dir, batch_size=16)
    tokenizer = backend.tokenizer
    prompts = [_text(160, i) + "\nAnswer:\n" for i in range(24 if quick else 48)]
    list(backend.answer([Request(prompts[0], choices=("yes", "no"))]))  # warm-up
    start = time.perf_counter()
    list(backend.answer([Request(p, choices=("yes", "no")) for p in prompts]))
    scored = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    result["score"] = scored / (time.perf_counter() - start)

    backend.batch_size = 32
    prompts = [_text(40, i) + "\nAnswer:\n" for i in range(32 if quick else 64)]
    start = time.perf_counter()
    responses = [r for _, r in backend.answer([Request(p, max_new_tokens=48) for p in prompts])]
    seconds = time.perf_counter() - start
    prefill = sum(len(tokenizer(p)["input_ids"]) for p in prompts) / result["score"]
    produced = sum(r.tokens for r in responses)
    result["decode"] = produced / max(seconds - prefill, 1e-3)
    result["decode_batch"] = backend.batch_size
    write_json(speeds_path(base_model, machine), result)
    return result

"""The GPU check: traitmap's trainer and hf backend on one GPU, timed and compared with the CPU.

Run it through bench/gpu_check.sh (bench/README.md says how). It measures, on the real
SmolLM2-135M architecture:

  train      LoRA training tokens/s with the paper preset (r=64, alpha 32, all projections,
             batch 16 x 4, max length 2048, precision "auto": bf16 on a GPU), on real
             training rows of the paper's ten sources, through traitmap.train.train_adapter;
  eval       choice scoring and greedy generation tokens/s through traitmap's HFBackend with
             every adapter of a study in flight (30 random LoRA adapters of r=64 + the base
             model), in fp32 (what the backend does today) and with the model cast to bf16,
             at the paper's evaluation batch size and a larger one, with the requests
             mixed as a study sends them (adapters share batches) and grouped by adapter;
  agreement  the same choice and generate requests on this device (fp32 and bf16) against
             the CPU in fp32: argmax agreement of choice records, share of differing greedy
             outputs, and whether the answers change with the batch size;
  estimate   the time of studies/paper.toml on this device from those speeds and the paper
             plan's token counts (bench/gpu_assets/paper_plan.json, counted ahead on the CPU).

The weights are seeded random (the real ones do not fit the transfer limit), normal with
std 0.05: at the usual 0.02 every prompt gets the same output, above about 0.06 bf16
errors explode; at 0.05 bf16's logprob errors are of the real model's size (bench/GPU.md).
Speeds do not depend on the weights, agreement does: with random weights it is a check of
the engine's numerics, not of the real model's answers. --model-dir uses real weights.

Every section is timed against a budget (--budget) and fenced: an error is recorded and the
next section runs. Results go to OUT/gpu_check.json and OUT/gpu_check.md after each
section, and the markdown is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "gpu_assets"
TOKENIZER_FILES = ("tokenizer_config.json", "generation_config.json")
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

FULL = dict(adapters=30, train_steps=6, time_box=8.0, eval_batches="32,256", agree_choice=128, agree_generate=32,
            agree_new_tokens=64, budget=420.0)
QUICK = dict(adapters=10, train_steps=2, time_box=3.0, eval_batches="32", agree_choice=64, agree_generate=16,
             agree_new_tokens=32, budget=140.0)


RESERVE = 40.0  # seconds kept for the CPU reference and the estimate at the end


class TimeUp(Exception):
    """Raised from a forward hook to end a time-boxed measurement."""


# -- helpers -------------------------------------------------------------------------------

def now() -> float:
    return time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def fmt(x, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:,.{digits}f}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Report:
    """The results, written to OUT after every section so that a killed run leaves them."""

    def __init__(self, out: Path, args):
        self.out = out
        self.data: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "mode": "quick" if args.quick else "full", "settings": vars(args).copy(), "errors": []}
        self.data["settings"]["out"] = str(out)

    def save(self) -> None:
        if self.data.get("train") or (self.data.get("eval") or {}).get("runs"):
            with contextlib.suppress(Exception):  # kept current, so that a stopped run still has one
                self.data["estimate"] = estimate(self)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self.data))

    @contextlib.contextmanager
    def section(self, name: str):
        start = now()
        print(f"\n== {name}", flush=True)
        try:
            yield
        except Exception as e:  # noqa: BLE001 -- one broken section must not lose the others
            tb = traceback.format_exc(limit=6)
            print(tb, file=sys.stderr, flush=True)
            self.data["errors"].append({"section": name, "error": f"{type(e).__name__}: {e}", "traceback": tb[-2000:]})
        finally:
            self.data.setdefault("section_seconds", {})[name] = round(now() - start, 1)
            self.save()


# -- set-up: the model, its adapters and the workload -------------------------------------

def environment(device: torch.device) -> dict:
    import peft
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                    bf16_native=torch.cuda.is_bf16_supported(including_emulation=False))
        with contextlib.suppress(Exception):  # fp32 matmuls in tf32 would change fp32 results: expect False
            info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return info


def build_model(args, work: Path) -> tuple[Path, str]:
    """A model folder: real weights from --model-dir, or SmolLM2-135M's architecture with seeded random weights."""
    if args.model_dir:
        return Path(args.model_dir), f"real weights from {args.model_dir}"
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = work / "model"
    folder.mkdir(parents=True)
    shutil.copyfile(ASSETS / "config.json", folder / "config.json")
    for name in TOKENIZER_FILES:
        shutil.copyfile(ASSETS / name, folder / name)
    (folder / "tokenizer.json").write_bytes(gzip.decompress((ASSETS / "tokenizer.json.gz").read_bytes()))
    config = AutoConfig.from_pretrained(folder)
    if args.layers:
        config.num_hidden_layers = args.layers
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, args.init_std)
    model.save_pretrained(folder)
    layers = f", {config.num_hidden_layers} of 30 layers" if args.layers else ""
    return folder, (f"seeded random weights (seed {args.seed}, normal std {args.init_std}) in SmolLM2-135M's "
                    f"architecture{layers}: speeds are the real model's, agreement is the engine's, not the real "
                    f"model's answers")


def build_adapters(args, model_dir: Path, work: Path) -> list:
    """`args.adapters` LoRA adapters of the paper's shape (r=64, alpha 32, all projections), seeded random,
    saved with PEFT. Each changes the layers' outputs by about a tenth, like a trained adapter, not like B=0."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from traitmap.backends.base import AdapterRef
    from traitmap.config import PRESETS

    paper = PRESETS["paper"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=paper["r"], lora_alpha=paper["alpha"], lora_dropout=0.0, target_modules=list(paper["target_modules"]),
                      task_type="CAUSAL_LM", bias="none")
    peft = get_peft_model(model, lora)
    scaling = paper["alpha"] / paper["r"]
    refs = []
    for i in range(args.adapters):
        g = torch.Generator().manual_seed(1000 + i)
        with torch.no_grad():
            for module in peft.modules():
                if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
                    continue
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                base = module.base_layer.weight
                a.copy_(torch.randn(a.shape, generator=g) / math.sqrt(a.shape[1]))
                out_std = float(base.std()) * math.sqrt(base.shape[1])
                b.copy_(torch.randn(b.shape, generator=g) * 0.1 * out_std / (scaling * math.sqrt(a.shape[0])))
        path = work / "adapters" / f"source{i}"
        peft.save_pretrained(path)
        refs.append(AdapterRef(f"source{i}", 0, path))
    return refs


def load_workload() -> dict:
    return json.loads(gzip.decompress((ASSETS / "workload.json.gz").read_bytes()))


# -- training -------------------------------------------------------------------------------

def measure_training(args, model_dir: Path, workload: dict, device: torch.device) -> dict:
    from traitmap.config import PRESETS, TrainConfig
    from traitmap.tasks import Example
    from traitmap.train import train_adapter

    examples = [Example(id=str(i), prompt=r["prompt"], target=r["target"], gold="", input_text="")
                for i, r in enumerate(workload["train"])]
    cfg = TrainConfig(preset="paper", **{**PRESETS["paper"], "steps": 1, "epochs": None})
    if args.train_max_length:
        cfg = dataclasses.replace(cfg, max_length=args.train_max_length)
    if args.train_batch:
        cfg = dataclasses.replace(cfg, batch_size=args.train_batch)
    t = now()
    train_adapter(model_dir, examples, cfg, seed=0)  # warm-up: kernels, allocator, cuBLAS handles
    warm = now() - t
    reset_peak(device)
    t = now()
    trained = train_adapter(model_dir, examples, dataclasses.replace(cfg, steps=args.train_steps), seed=1)
    log = trained.log
    return {
        "what": f"train_adapter, paper preset, {args.train_steps} optimizer steps of {cfg.batch_size} x {cfg.grad_accum} rows "
                f"(after a 1-step warm-up), rows drawn from the paper's sources in proportion to their sizes",
        "precision": log["precision"], "device": log["device"], "steps": log["steps"], "rows_per_step": cfg.batch_size * cfg.grad_accum,
        "max_length": cfg.max_length, "tokens": log["tokens"], "seconds": log["seconds"],
        "tokens_per_second": log["tokens_per_second"], "first_loss": log["first_loss"], "final_loss": log["final_loss"],
        "warmup_call_seconds": round(warm, 1), "call_seconds": round(now() - t, 1), "peak_gib": peak_gib(device),
    }


# -- evaluation throughput --------------------------------------------------------------------

class Meter:
    """Counts the tokens and times the forward passes of a backend's model, and ends a run at a deadline.

    The counting hooks sit on the decoder stack (the transformers model inside the CausalLM),
    which every forward passes through. A forward with one new token per row is a decode
    step; any other is a prefill (scoring or a generation's prompts). The first `skip`
    forwards are a warm-up and are not counted; at least `min_counted` are. The deadline is
    checked before the model's own forward, so an exception never starts inside a layer.
    """

    def __init__(self, backend, device: torch.device, time_box: float, skip: int = 2, min_counted: int = 3):
        self.device, self.skip, self.time_box, self.min_counted = device, skip, time_box, min_counted
        self.deadline = math.inf
        self.forwards = 0
        self.t0 = None
        self.counts = {"prefill_tokens": 0, "decode_tokens": 0, "prefill_seconds": 0.0, "decode_seconds": 0.0,
                       "prefill_forwards": 0, "decode_forwards": 0}
        self._start = 0.0
        self._kind = None
        self._tokens = 0
        entry = backend.model
        decoder = backend.model.get_decoder() if hasattr(backend.model, "get_decoder") else backend.model.model
        self.handles = [entry.register_forward_pre_hook(self._check),
                        decoder.register_forward_pre_hook(self._pre, with_kwargs=True),
                        decoder.register_forward_hook(self._post, with_kwargs=True)]

    @property
    def counted(self) -> int:
        return self.counts["prefill_forwards"] + self.counts["decode_forwards"]

    def time_up(self) -> bool:
        return time.perf_counter() > self.deadline and self.counted >= self.min_counted

    def _check(self, module, args):
        if self.time_up():
            raise TimeUp()

    def _pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        sync(self.device)
        self._start = now()
        width = ids.shape[1]
        decode = width == 1  # prompts are longer than one token; the cache's keyword differs between versions
        self._kind = "decode" if decode else "prefill"
        self._tokens = ids.shape[0] if decode else int(mask[:, -width:].sum()) if mask is not None else ids.numel()

    def _post(self, module, args, kwargs, output):
        sync(self.device)
        end = now()
        self.forwards += 1
        if self.forwards < self.skip:
            return
        if self.forwards == self.skip:
            self.t0 = end  # the clock starts after the warm-up forwards
            self.deadline = end + self.time_box
            return
        self.counts[f"{self._kind}_tokens"] += self._tokens
        self.counts[f"{self._kind}_seconds"] += end - self._start
        self.counts[f"{self._kind}_forwards"] += 1

    def close(self):
        for h in self.handles:
            h.remove()


def timed_run(backend, batches: list[list], device: torch.device, time_box: float) -> dict:
    """Answer the requests (one backend call per list) until done or `time_box` seconds after the warm-up."""
    meter = Meter(backend, device, time_box)
    reset_peak(device)
    start = now()
    finished = True
    try:
        for requests in batches:
            for _ in backend.answer(requests):
                if meter.time_up():
                    raise TimeUp()
    except TimeUp:
        finished = False
    finally:
        meter.close()
    sync(device)
    end = now()
    c = meter.counts
    wall = end - (meter.t0 or start)
    result = {**c, "wall_seconds": round(wall, 3), "finished": finished, "peak_gib": peak_gib(device)}
    for k in ("prefill_seconds", "decode_seconds"):
        result[k] = round(result[k], 3)
    if c["decode_tokens"]:
        # decode speed over the wall time less the prefills' time: the python between steps counts too
        result["decode_tps"] = round(c["decode_tokens"] / max(1e-9, wall - c["prefill_seconds"]), 1)
    elif c["prefill_tokens"]:
        result["score_tps"] = round(c["prefill_tokens"] / max(1e-9, wall), 1)
    if c["prefill_forwards"]:
        result["prefill_tps"] = round(c["prefill_tokens"] / max(1e-9, c["prefill_seconds"]), 1)
    return result


def throughput_requests(workload: dict, models: list, kind: str, batch: int, grouped: bool) -> list[list]:
    """Requests as a study sends them (mixed: one call, every model on every prompt, cells first) or one
    call per model (grouped: batches hold one adapter), with enough rows to fill `batch`."""
    from traitmap.backends.base import Request

    if kind == "choice":
        prompts = [(p["prompt"], dict(choices=tuple(p["choices"]))) for p in workload["choice"]]
    else:
        prompts = [(p["prompt"], dict(max_new_tokens=p["max_new_tokens"], stop=tuple(p["stop"]))) for p in workload["generate"]]
    if grouped:
        n = max(len(prompts), 2 * batch)
        return [[Request(prompts[i % len(prompts)][0], ref, **prompts[i % len(prompts)][1]) for i in range(n)] for ref in models]
    return [[Request(p, ref, **kw) for ref in models for p, kw in prompts]]


def measure_eval(args, backend, models: list, workload: dict, device: torch.device, dtype: str, report: Report,
                 budget_left) -> None:
    runs = report.data.setdefault("eval", {}).setdefault("runs", [])
    for batch in [int(b) for b in args.eval_batches.split(",")]:
        backend.batch_size = batch
        for kind in ("choice", "generate"):
            for grouped in (False, True):
                if budget_left() < args.time_box + RESERVE:
                    report.data["errors"].append({"section": "eval", "error": f"skipped {dtype} {kind} batch {batch} "
                                                  f"{'grouped' if grouped else 'mixed'}: out of budget"})
                    continue
                result = timed_run(backend, throughput_requests(workload, models, kind, batch, grouped), device, args.time_box)
                row = {"dtype": dtype, "batch": batch, "kind": kind, "batches": "grouped" if grouped else "mixed",
                       "models": len(models), **result}
                runs.append(row)
                speed = row.get("decode_tps") or row.get("score_tps")
                print(f"  {dtype} {kind:8s} batch {batch:4d} {row['batches']:7s}: {fmt(speed)} tokens/s "
                      f"({'done' if result['finished'] else 'time-boxed'})", flush=True)
                report.save()


# -- agreement --------------------------------------------------------------------------------

@torch.inference_mode()  # the adapters were loaded as inference tensors, inside answer()
def to_bf16(model) -> str:
    """The base model's weights in bf16 as from_pretrained(dtype=torch.bfloat16) would load them.

    Not model.to(bfloat16): that also rounds the rotary embedding's inv_freq buffers, which
    from_pretrained keeps in fp32. The LoRA weights stay fp32 (the backend's adapter bank keeps
    them so, as PEFT does on a bf16 model). Tied weights stay tied.
    """
    cast: dict[int, torch.nn.Parameter] = {}
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        for key, p in list(module._parameters.items()):
            if p is None or not p.is_floating_point():
                continue
            if id(p) not in cast:
                cast[id(p)] = torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
            module._parameters[key] = cast[id(p)]
    return ("base weights cast to bf16 as from_pretrained(dtype=bfloat16) loads them (rotary buffers fp32), "
            "LoRA weights fp32 as PEFT loads adapters onto a bf16 model")


def peft_hooks(backend) -> int:
    """Forward pre-hooks left on the model's modules after the runs: 0 unless a run leaked hooks."""
    return sum(len(m._forward_pre_hooks) for m in backend.model.modules())


def agreement_requests(workload: dict, models: list, args) -> tuple[list, list]:
    """Choice and generate requests spread round-robin over the base model and the first adapters."""
    from traitmap.backends.base import Request

    choice = [Request(p["prompt"], models[i % len(models)], choices=tuple(p["choices"]))
              for i, p in enumerate(workload["choice"][: args.agree_choice])]
    generate = [Request(p["prompt"], models[i % len(models)], max_new_tokens=args.agree_new_tokens, stop=tuple(p["stop"]))
                for i, p in enumerate(workload["generate"][: args.agree_generate])]
    return choice, generate


def answer_all(backend, requests: list, batch: int) -> tuple[list, float]:
    backend.batch_size = batch
    t = now()
    got = dict(backend.answer(requests))
    return [got[i] for i in range(len(requests))], now() - t


def answers(backend, choice: list, generate: list, batch: int) -> dict:
    c, cs = answer_all(backend, choice, batch)
    g, gs = answer_all(backend, generate, batch)
    return {"choice": c, "generate": g, "choice_seconds": round(cs, 2), "generate_seconds": round(gs, 2)}


def predicted(response) -> str:
    lp = response.logprobs
    return max(lp, key=lambda c: lp[c])  # as Task.score: the first of equal verbalizers


def compare(reference: dict, other: dict, choice_requests: list) -> dict:
    """How `other` differs from `reference` on the same requests."""
    n = len(reference["choice"])
    same = sum(predicted(a) == predicted(b) for a, b in zip(reference["choice"], other["choice"]))
    diffs = [abs(a.logprobs[c] - b.logprobs[c]) for a, b, r in zip(reference["choice"], other["choice"], choice_requests)
             for c in r.choices]
    margins = []
    for a, b in zip(reference["choice"], other["choice"]):
        if predicted(a) != predicted(b):
            top = sorted(a.logprobs.values(), reverse=True)
            margins.append(round(top[0] - top[1], 4))
    texts = [(a.text, b.text) for a, b in zip(reference["generate"], other["generate"])]
    differ = [(x, y) for x, y in texts if x != y]
    prefix = [len(os.path.commonprefix([x, y])) / max(1, len(x)) for x, y in differ]
    return {
        "choice_records": n, "argmax_agreement": round(same / n, 4) if n else None,
        "flipped_records_reference_margins": margins,
        "max_abs_logprob_diff": round(max(diffs), 6) if diffs else None,
        "mean_abs_logprob_diff": round(sum(diffs) / len(diffs), 6) if diffs else None,
        "generate_records": len(texts), "differing_outputs": len(differ),
        "differing_share": round(len(differ) / len(texts), 4) if texts else None,
        "differing_mean_common_prefix": round(sum(prefix) / len(prefix), 3) if prefix else None,
    }


# -- the estimate -------------------------------------------------------------------------------

def estimate(report: Report) -> dict:
    """studies/paper.toml's time from the measured speeds, as traitmap's dry-run estimate counts it:
    training tokens / training speed; per cell, scored tokens / scoring speed + new tokens / decoding speed."""
    plan = json.loads((ASSETS / "paper_plan.json").read_text())
    train_tokens = sum(s["tokens"] * s["adapters"] for s in plan["sources"])
    score_tokens = sum(t["score_tokens"] * t["cells"] for t in plan["targets"])
    new_tokens = sum(t.get("new_tokens", 0) * t["cells"] for t in plan["targets"])
    cpu = plan["cpu_default_speeds"]
    cpu_train, cpu_eval = train_tokens / cpu["train"], score_tokens / cpu["score"] + new_tokens / cpu["generate"]
    train_tps = (report.data.get("train") or {}).get("tokens_per_second")
    train_s = train_tokens / train_tps if train_tps else None
    out = {"plan": plan["study"], "train_tokens": train_tokens, "score_tokens": score_tokens, "new_tokens": new_tokens,
           "cpu_2core": {"train_seconds": round(cpu_train), "eval_seconds": round(cpu_eval), "speeds": cpu},
           "train_seconds": round(train_s, 1) if train_s else None, "configurations": []}
    runs = (report.data.get("eval") or {}).get("runs", [])
    configs = sorted({(r["dtype"], r["batch"], r["batches"]) for r in runs})
    for dtype, batch, batches in configs:
        pick = {r["kind"]: r for r in runs if (r["dtype"], r["batch"], r["batches"]) == (dtype, batch, batches)}
        score_tps = pick.get("choice", {}).get("score_tps")
        decode_tps = pick.get("generate", {}).get("decode_tps")
        if not (score_tps and decode_tps):
            continue
        eval_s = score_tokens / score_tps + new_tokens / decode_tps
        total = eval_s + (train_s or 0)
        out["configurations"].append({
            "dtype": dtype, "batch": batch, "batches": batches, "score_tps": score_tps, "decode_tps": decode_tps,
            "eval_seconds": round(eval_s, 1), "total_seconds": round(total, 1) if train_s else None,
            "eval_speedup_vs_cpu": round(cpu_eval / eval_s, 1),
        })
    if train_tps:
        out["train_speedup_vs_cpu"] = round(train_tps / cpu["train"], 1)
    out["note"] = ("generation counted at max_new_tokens (an upper bound, as the dry run counts it); 'mixed' is how "
                   "the hf backend batches a study's requests today, 'grouped' is one adapter per batch; the CPU "
                   "figures are traitmap's default speeds for SmolLM2-135M on 2 cores in fp32 (estimate.DEFAULT_SPEEDS)")
    return out


# -- the markdown --------------------------------------------------------------------------------

def markdown(d: dict) -> str:
    env_ = d.get("environment", {})
    lines = [f"# traitmap GPU check ({d.get('mode')}, {d.get('started')})", ""]
    lines.append(f"- device: {env_.get('gpu', env_.get('device', '?'))}; torch {env_.get('torch')}, transformers "
                 f"{env_.get('transformers')}, peft {env_.get('peft')}, CUDA {env_.get('cuda', '–')}")
    if d.get("weights"):
        lines.append(f"- weights: {d['weights']}")
    setup = d.get("setup")
    if setup:
        lines.append(f"- set-up: {setup.get('models')} models ({setup.get('adapters')} adapters of r=64, "
                     f"{fmt(setup.get('adapter_mb'), 0)} MB each), built in {fmt(setup.get('seconds'), 1)} s")
    t = d.get("train")
    if t:
        lines += ["", "## Training (paper preset)", "",
                  "| precision | steps x rows | tokens | seconds | tokens/s | peak GiB |", "|---|---:|---:|---:|---:|---:|",
                  f"| {t['precision']} | {t['steps']} x {t['rows_per_step']} | {fmt(t['tokens'])} | {fmt(t['seconds'], 1)} "
                  f"| **{fmt(t['tokens_per_second'])}** | {fmt(t.get('peak_gib'), 1)} |"]
    ev = d.get("eval")
    if ev and ev.get("runs"):
        lines += ["", f"## Evaluation throughput ({ev.get('models', '?')} models in flight; adapters loaded in "
                  f"{fmt(ev.get('adapter_load_seconds'), 1)} s)", "",
                  "| dtype | batch | kind | batches | tokens/s | prefill tok/s | forwards | wall s | peak GiB |",
                  "|---|---:|---|---|---:|---:|---:|---:|---:|"]
        for r in ev["runs"]:
            speed = r.get("decode_tps") or r.get("score_tps")
            what = "decode" if r["kind"] == "generate" else "score"
            lines.append(f"| {r['dtype']} | {r['batch']} | {what} | {r['batches']} | **{fmt(speed)}** | {fmt(r.get('prefill_tps'))} "
                         f"| {r['prefill_forwards'] + r['decode_forwards']} | {fmt(r['wall_seconds'], 1)} | {fmt(r.get('peak_gib'), 1)} |")
    ag = d.get("agreement")
    if ag:
        lines += ["", "## Agreement with the CPU in fp32", "",
                  f"Reference: CPU fp32, {ag.get('cpu', {}).get('choice_records', '?')} choice and "
                  f"{ag.get('cpu', {}).get('generate_records', '?')} generate requests ({ag.get('new_tokens')} new tokens), "
                  f"batch {ag.get('batch')}; CPU took {fmt(ag.get('cpu', {}).get('seconds'), 1)} s.", "",
                  "| compared | choice argmax agreement | max abs logprob diff | differing greedy outputs |",
                  "|---|---:|---:|---:|"]
        for name, c in ag.get("comparisons", {}).items():
            lines.append(f"| {name} | {fmt(100 * c['argmax_agreement'], 2) + ' %' if c['argmax_agreement'] is not None else '–'} "
                         f"| {fmt(c['max_abs_logprob_diff'], 5)} | {c['differing_outputs']} of {c['generate_records']} |")
    es = d.get("estimate")
    if es:
        cpu = es["cpu_2core"]
        lines += ["", f"## Estimated time of {es['plan']} on this device", "",
                  f"{es['train_tokens'] / 1e6:.1f}M training tokens, {es['score_tokens'] / 1e6:.1f}M scored tokens, "
                  f"{es['new_tokens'] / 1e6:.1f}M generated tokens (at most). Training: "
                  f"{duration(es.get('train_seconds'))} ({fmt(es.get('train_speedup_vs_cpu'), 1)}x the 2-core CPU). "
                  f"On the 2-core CPU: {duration(cpu['train_seconds'] + cpu['eval_seconds'])}.", "",
                  "| eval dtype | batch | batches | eval | eval vs 2-core CPU | study total |", "|---|---:|---|---:|---:|---:|"]
        for c in es["configurations"]:
            lines.append(f"| {c['dtype']} | {c['batch']} | {c['batches']} | {duration(c['eval_seconds'])} | "
                         f"{fmt(c['eval_speedup_vs_cpu'], 1)}x | **{duration(c['total_seconds'])}** |")
        lines += ["", es["note"] + "."]
    if d.get("errors"):
        lines += ["", "## Errors and skips", ""] + [f"- {e['section']}: {e['error']}" for e in d["errors"]]
    if d.get("section_seconds"):
        lines += ["", "Seconds per section: " + ", ".join(f"{k} {v}" for k, v in d["section_seconds"].items())
                  + f"; total {d.get('total_seconds', '?')}"]
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="about 2 minutes: fewer adapters, steps and sizes")
    ap.add_argument("--device", default=None, help="cuda (default where present) or cpu (to try the script)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    ap.add_argument("--model-dir", default=None, help="a model folder with real weights (default: random weights)")
    ap.add_argument("--adapters", type=int, help="LoRA adapters in flight besides the base model (full 30, quick 10)")
    ap.add_argument("--train-steps", type=int, help="timed optimizer steps (full 6, quick 2)")
    ap.add_argument("--train-batch", type=int, default=None, help="override the paper's batch of 16 (trial runs)")
    ap.add_argument("--train-max-length", type=int, default=None, help="override the paper's 2048 (trial runs)")
    ap.add_argument("--time-box", type=float, help="seconds per throughput measurement (full 8, quick 3)")
    ap.add_argument("--eval-batches", help="evaluation batch sizes, comma-separated (full 32,256, quick 32)")
    ap.add_argument("--agree-choice", type=int, help="choice requests compared with the CPU (full 128, quick 64)")
    ap.add_argument("--agree-generate", type=int, help="generate requests compared with the CPU (full 32, quick 16)")
    ap.add_argument("--agree-new-tokens", type=int, help="their max_new_tokens (full 64, quick 32)")
    ap.add_argument("--agree-models", type=int, default=5, help="models the agreement requests spread over")
    ap.add_argument("--budget", type=float, help="seconds the check may take; later sections shrink (full 420, quick 140)")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the real 30 (trial runs only)")
    ap.add_argument("--init-std", type=float, default=0.05, help="std of the random weights (bench/GPU.md: why 0.05)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="sections to leave out, comma-separated: train,eval,agreement")
    args = ap.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = now()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    os.environ["TRAITMAP_DEVICE"] = str(device)  # traitmap.models.device(): where train_adapter and HFBackend run
    out = Path(args.out)
    report = Report(out, args)
    skip = set(filter(None, args.skip.split(",")))

    def budget_left() -> float:
        return args.budget - (now() - start)

    report.data["environment"] = environment(device)
    print(json.dumps(report.data["environment"]), flush=True)
    if device.type != "cuda":
        report.data["errors"].append({"section": "environment", "error": f"no GPU: ran on {device} (a trial run)"})

    work = Path(tempfile.mkdtemp(prefix="traitmap-gpu-check-"))
    models, backend = [], None
    try:
        with report.section("setup"):
            t = now()
            model_dir, weights = build_model(args, work)
            report.data["weights"] = weights
            models = [None] + build_adapters(args, model_dir, work)
            workload = load_workload()
            size = (models[1].path / "adapter_model.safetensors").stat().st_size / 1e6 if len(models) > 1 else 0
            report.data["setup"] = {"seconds": round(now() - t, 1), "models": len(models), "adapters": len(models) - 1,
                                    "adapter_mb": round(size, 1), "workload": workload["source"]}
            print(weights, flush=True)
        if not models:
            return 1

        if "train" not in skip:
            with report.section("train"):
                report.data["train"] = measure_training(args, model_dir, workload, device)
                print(f"  {report.data['train']['precision']}: {fmt(report.data['train']['tokens_per_second'])} tokens/s", flush=True)

        from traitmap.backends.hf import HFBackend

        agree_models = models[: args.agree_models]
        agree_choice, agree_generate = agreement_requests(workload, agree_models, args)
        results: dict = {}
        batch = int(args.eval_batches.split(",")[0])

        with report.section("eval fp32"):
            backend = HFBackend(model_dir, batch_size=batch)
            t = now()
            from traitmap.backends.base import Request

            dict(backend.answer([Request("Hello", ref, choices=("a", "b")) for ref in models]))  # loads every adapter
            sync(device)
            report.data["eval"] = {"models": len(models), "adapter_load_seconds": round(now() - t, 1), "runs": [],
                                   "attention": getattr(backend.model.config, "_attn_implementation", None)}
            if "agreement" not in skip:
                results["fp32"] = answers(backend, agree_choice, agree_generate, batch)
                results["fp32 other batch"] = answers(backend, agree_choice, agree_generate, max(1, batch // 4 + 1))
            if "eval" not in skip:
                measure_eval(args, backend, models, workload, device, "fp32", report, budget_left)
            report.data["eval"]["peft_hooks_left"] = peft_hooks(backend)

        with report.section("eval bf16"):
            report.data["eval"]["bf16"] = to_bf16(backend.model)
            if "agreement" not in skip:
                results["bf16"] = answers(backend, agree_choice, agree_generate, batch)
                results["bf16 other batch"] = answers(backend, agree_choice, agree_generate, max(1, batch // 4 + 1))
            if "eval" not in skip:
                measure_eval(args, backend, models, workload, device, "bf16", report, budget_left)
            report.data["eval"]["peft_hooks_left"] = peft_hooks(backend)
        backend = None
        if device.type == "cuda":
            torch.cuda.empty_cache()

        if "agreement" not in skip and results:
            with report.section("agreement"):
                with env("TRAITMAP_DEVICE", "cpu"):
                    cpu_backend = HFBackend(model_dir, batch_size=batch)
                t = now()
                reference = answers(cpu_backend, agree_choice, agree_generate, batch)
                cpu_seconds = now() - t
                where = device.type
                comparisons = {f"{where} {name} vs CPU fp32": compare(reference, r, agree_choice)
                               for name, r in results.items() if "other" not in name}
                for dtype in ("fp32", "bf16"):
                    if dtype in results and f"{dtype} other batch" in results:
                        comparisons[f"{where} {dtype}: batch {batch} vs {max(1, batch // 4 + 1)}"] = compare(
                            results[dtype], results[f"{dtype} other batch"], agree_choice)
                report.data["agreement"] = {
                    "batch": batch, "new_tokens": args.agree_new_tokens, "models": len(agree_models),
                    "cpu": {"choice_records": len(agree_choice), "generate_records": len(agree_generate),
                            "seconds": round(cpu_seconds, 1), "threads": torch.get_num_threads()},
                    "comparisons": comparisons,
                    "target": "argmax agreement >= 99% between CUDA bf16 and CPU fp32 (issue 8)",
                }
                for name, c in comparisons.items():
                    print(f"  {name}: argmax {c['argmax_agreement']}, differing outputs {c['differing_outputs']}/"
                          f"{c['generate_records']}", flush=True)

        with report.section("estimate"):
            report.data["estimate"] = estimate(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        report.data["total_seconds"] = round(now() - start, 1)
        report.save()
    print("\n" + (out / "gpu_check.md").read_text(), flush=True)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}", flush=True)
    return 0 if not [e for e in report.data["errors"] if "traceback" in e] else 2


if __name__ == "__main__":
    sys.exit(main())

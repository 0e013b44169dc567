"""The hf backend and the trainer on a CUDA GPU, against the CPU in fp32. Skipped without CUDA.

On a GPU the same requests must get the CPU's answers: choice logprobs within rounding and
the same greedy text in fp32, choice argmax agreement (issue 8 asks >= 99% for bf16 on the
real model; bench/gpu_check.py measures that at scale), and answers that do not depend on
the batch size. `auto` must pick the GPU and bf16 training there.

TRAITMAP_TEST_GPU=cpu runs the same tests with the CPU standing in for the GPU, to check
the tests themselves on a machine without one.
"""

import os

import pytest
import torch
from helpers import TINY_PROMPTS

from traitmap.backends import AdapterRef, Request
from traitmap.backends.hf import HFBackend

DEVICE = os.environ.get("TRAITMAP_TEST_GPU", "cuda")

pytestmark = [
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.usefixtures("one_torch_thread"),
]

PROMPTS = [*TINY_PROMPTS, "Is the following tweet offensive? yes no.\nAnswer:\n"]
CHOICES = ("positive", "negative sentiment", "no")  # multi-token and single-token choices


@pytest.fixture(scope="module")
def requests(model_dir):
    models = [None] + [AdapterRef(name, 0, model_dir / "adapters" / name) for name in ("a", "b")]
    choice = [Request(p, adapter=m, choices=CHOICES) for p in PROMPTS for m in models]
    generate = [Request(p, adapter=m, max_new_tokens=12) for p in PROMPTS for m in models]
    return choice + generate


def backend_on(device: str, model_dir, batch_size: int = 4) -> HFBackend:
    old = os.environ.get("TRAITMAP_DEVICE")
    os.environ["TRAITMAP_DEVICE"] = device
    try:
        engine = HFBackend(model_dir, batch_size=batch_size)
    finally:
        if old is None:
            del os.environ["TRAITMAP_DEVICE"]
        else:
            os.environ["TRAITMAP_DEVICE"] = old
    assert engine.device.type == torch.device(device).type
    return engine


def answers(engine, requests) -> list:
    got = dict(engine.answer(requests))
    return [got[i] for i in range(len(requests))]


@torch.inference_mode()
def base_weights_to_bf16(model) -> None:
    """As from_pretrained(dtype=bfloat16) loads a model (rotary buffers stay fp32); LoRA weights stay fp32."""
    cast = {}
    for name, module in model.named_modules():
        if "lora_" in name:
            continue
        for key, p in list(module._parameters.items()):
            if p is not None and p.is_floating_point():
                cast.setdefault(id(p), torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False))
                module._parameters[key] = cast[id(p)]


def logprobs(responses) -> torch.Tensor:
    return torch.tensor([[r.logprobs[c] for c in CHOICES] for r in responses if r.logprobs], dtype=torch.float64)


def texts(responses) -> list[str]:
    return [r.text for r in responses if not r.logprobs]


@pytest.fixture(scope="module")
def cpu_reference(model_dir, requests):
    return answers(backend_on("cpu", model_dir), requests)


def test_auto_picks_the_gpu_and_bf16_training(monkeypatch):
    from traitmap import models
    from traitmap.backends import resolve_name
    from traitmap.train import training_precision

    if DEVICE == "cuda":
        monkeypatch.delenv("TRAITMAP_DEVICE", raising=False)
        assert models.device().type == "cuda"
        assert training_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_name("auto") == "hf"


def test_fp32_on_the_gpu_gives_the_cpus_answers(model_dir, requests, cpu_reference):
    got = answers(backend_on(DEVICE, model_dir), requests)
    want = cpu_reference
    assert torch.allclose(logprobs(got), logprobs(want), atol=1e-4)
    assert (logprobs(got).argmax(1) == logprobs(want).argmax(1)).all()
    assert texts(got) == texts(want)
    assert len(set(texts(want))) > len(PROMPTS)  # varied text: the comparison means something


def test_answers_on_the_gpu_do_not_depend_on_the_batch_size(model_dir, requests):
    reference = answers(backend_on(DEVICE, model_dir, batch_size=1), requests)
    for batch_size in (3, 16):
        got = answers(backend_on(DEVICE, model_dir, batch_size=batch_size), requests)
        # cuBLAS may pick another kernel for another batch size: rounding, never another answer
        assert torch.allclose(logprobs(got), logprobs(reference), atol=1e-4)
        assert texts(got) == texts(reference)


def test_bf16_on_the_gpu_agrees_with_the_cpu_in_fp32(model_dir, requests, cpu_reference):
    engine = backend_on(DEVICE, model_dir)
    answers(engine, requests[:3])  # loads the adapters (fp32), as a study's first call would
    base_weights_to_bf16(engine.model)
    got = answers(engine, requests)
    diff = (logprobs(got) - logprobs(cpu_reference)).abs()
    agree = (logprobs(got).argmax(1) == logprobs(cpu_reference).argmax(1)).double().mean().item()
    differing = sum(a != b for a, b in zip(texts(got), texts(cpu_reference)))
    print(f"bf16 vs CPU fp32: argmax agreement {agree:.3f}, max |logprob diff| {diff.max():.4f}, "
          f"{differing} of {len(texts(got))} greedy outputs differ")
    assert diff.max() < 1.0  # bf16 rounding (0.23 on an AMX CPU), not a wrong adapter (they move logprobs by ~10)
    assert agree >= 0.9


def test_training_on_the_gpu_runs_in_bf16_and_learns(tiny_model_dir, monkeypatch):
    from traitmap.config import PRESETS, TrainConfig
    from traitmap.tasks import Example
    from traitmap.train import train_adapter

    monkeypatch.setenv("TRAITMAP_DEVICE", DEVICE)
    examples = [Example(id=str(i), prompt=f"Review: {t}\nSentiment:\n", target=label, gold=label, input_text=t, label=label)
                for i, (t, label) in enumerate([("I loved it.", "positive"), ("It broke.", "negative")] * 4)]
    precision = "bf16" if DEVICE == "cuda" else "fp32"
    cfg = TrainConfig(preset="paper", **{**PRESETS["paper"], "steps": 6, "epochs": None, "batch_size": 4, "grad_accum": 1,
                                         "max_length": 64, "lr": 5e-3, "warmup_steps": 1, "r": 8, "precision": precision})
    log = train_adapter(tiny_model_dir, examples, cfg, seed=0).log
    assert log["device"] == torch.device(DEVICE).type and log["precision"] == precision
    assert all(torch.isfinite(torch.tensor(step["loss"])) for step in log["log"])
    assert log["final_loss"] < log["first_loss"]

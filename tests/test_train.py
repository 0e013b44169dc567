"""Training one LoRA adapter on the tiny model: it learns, masks the prompt, saves a loadable adapter,
and picks its precision from what the machine has."""

import contextlib
import dataclasses
import json

import pytest
import torch

from traitmap.config import PRESETS, TrainConfig
from traitmap.tasks import Example
from traitmap.run import save_adapter
from traitmap.train import (IGNORE, PROMPT_FLOOR, EarlyStopping, _padded, answer_loss, auto_max_length, kept_lengths,
                            native_bf16, tokenize_examples, train_adapter, training_precision, truncation,
                            validation_loss)

EXAMPLES = [
    Example(id=str(i), prompt=f"What is the sentiment of the below sentence?\n{text}\nSentiment:\n", target=label,
            gold=label, input_text=text, label=label)
    for i, (text, label) in enumerate([
        ("The movie was great, I loved it.", "positive"),
        ("The product is bad, it broke in a day.", "negative"),
        ("I loved it.", "positive"),
        ("It broke.", "negative"),
    ])
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(**changes) -> TrainConfig:
    values = {**PRESETS["cpu"], "steps": 2, "batch_size": 2, "max_length": 64, "precision": "fp32", **changes}
    return TrainConfig(preset="cpu", **values)


def train_to(folder, model_dir, cfg, seed=0) -> dict:
    trained = train_adapter(model_dir, EXAMPLES, cfg, seed)
    save_adapter(trained, folder)
    return trained.log


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from traitmap.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def lora_weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_labels_mask_the_prompt_when_training_on_answers(tokenizer):
    ex = EXAMPLES[0]
    prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    [row] = tokenize_examples(tokenizer, [ex], max_length=64, loss_on="answer")
    assert row["input_ids"] == prompt + answer
    assert row["labels"] == [IGNORE] * len(prompt) + answer
    [whole] = tokenize_examples(tokenizer, [ex], max_length=64, loss_on="all")
    assert whole["labels"] == prompt + answer


def test_long_prompts_lose_their_start_not_the_answer(tokenizer):
    ex = EXAMPLES[0]
    answer = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    [row] = tokenize_examples(tokenizer, [ex], max_length=len(answer) + 8, loss_on="answer")
    assert len(row["input_ids"]) == len(answer) + 8
    assert row["input_ids"][-len(answer):] == answer
    assert row["labels"][:8] == [IGNORE] * 8


def test_total_steps():
    assert config(steps=7).total_steps(100) == 7
    assert config(steps=None, epochs=2, batch_size=4, grad_accum=2).total_steps(20) == 5  # ceil(2 * 20 / 8)


def test_loss_decreases(tiny_model_dir, tmp_path):
    log = train_adapter(tiny_model_dir, EXAMPLES, config(steps=30, lr=1e-2, warmup_steps=0, r=4), 0).log
    losses = [entry["loss"] for entry in log["log"]]
    assert len(losses) == 30 and log["steps"] == 30
    # The tiny model's tied, small embeddings cap how far its loss can fall; 0.15 nats is well clear of noise.
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.15
    assert log["final_loss"] == losses[-1] and log["first_loss"] == losses[0]


def test_saved_adapter_loads_with_peft_and_changes_the_model(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapters" / "a"
    out.parent.mkdir()
    log = train_to(out, tiny_model_dir, config(lr=1e-2, r=4))
    assert [p.name for p in out.parent.iterdir()] == ["a"]  # no .tmp folder left behind
    assert json.loads((out / "training_log.json").read_text())["final_loss"] == log["final_loss"]

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    before = base(input_ids=ids).logits
    model = PeftModel.from_pretrained(base, out).eval()
    assert model.peft_config["default"].r == 4
    assert not torch.allclose(model(input_ids=ids).logits, before)


def test_same_seed_same_adapter_other_seed_other_adapter(tiny_model_dir, tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        train_to(tmp_path / name, tiny_model_dir, config(), seed)
    a, b, c = (lora_weights(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_replaces_an_existing_adapter(tiny_model_dir, tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    train_to(out, tiny_model_dir, config())
    assert not (out / "stale.txt").exists() and (out / "adapter_config.json").is_file()
    assert not (tmp_path / "a.tmp").exists()


def test_auto_precision_is_bf16_only_where_the_machine_has_bf16_units():
    cpu = torch.device("cpu")
    assert training_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert training_precision("fp32", cpu) == "fp32" and training_precision("bf16", cpu) == "bf16"


def test_auto_precision_does_not_count_a_gpus_emulated_bf16(monkeypatch):
    # torch.cuda.is_bf16_supported() says True on a V100 or T4, which only emulate bf16.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not native_bf16(torch.device("cuda"))
    assert training_precision("auto", torch.device("cuda")) == "fp32"


def test_the_training_log_says_which_precision_ran(tiny_model_dir):
    log = train_adapter(tiny_model_dir, EXAMPLES, config(precision="auto"), 0).log
    assert log["precision"] == training_precision("auto", torch.device("cpu")) and log["device"] == "cpu"


def test_a_failed_save_leaves_no_temporary_folder(tmp_path):
    from traitmap.jobs import TrainedAdapter

    from traitmap.errors import TraitmapError

    with pytest.raises(TraitmapError, match="could not write it"):
        save_adapter(TrainedAdapter({"adapter_config.json": b"{}", "": b"x"}, {}), tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


VALIDATION = [
    Example(id=f"v{i}", prompt=f"What is the sentiment of the below sentence?\n{text}\nSentiment:\n", target=label,
            gold=label, input_text=text, label=label)
    for i, (text, label) in enumerate([("I loved the movie.", "positive"), ("The product broke.", "negative"),
                                       ("It was great.", "positive")])
]


def test_early_stopping_waits_patience_validations_and_keeps_the_lowest_loss():
    stopping = EarlyStopping(patience=2, min_delta=0.1)
    planted = [(0, 3.0), (5, 2.0), (10, 1.5), (15, 1.45), (20, 1.42), (25, 1.6)]
    kept = [step for step, loss in planted[:5] if stopping.update(step, loss)]
    # 1.45 and 1.42 improve on 1.5 by less than min_delta: two validations without progress
    assert stopping.stop and stopping.waited == 2
    assert kept == [0, 5, 10, 15, 20] and (stopping.best_step, stopping.best_loss) == (20, 1.42)

    falling = EarlyStopping(patience=2, min_delta=0.1)
    for step, loss in enumerate([3.0, 2.5, 2.0, 1.5, 1.0]):
        falling.update(step, loss)
    assert not falling.stop


def test_a_curve_that_rises_stops_and_keeps_its_first_minimum():
    stopping = EarlyStopping(patience=3, min_delta=0.0)
    for step, loss in enumerate([2.0, 1.0, 1.2, 1.3, 1.1, 0.9]):
        stopping.update(step, loss)
        if stopping.stop:
            break
    assert (step, stopping.best_step, stopping.best_loss) == (4, 1, 1.0)


def test_auto_stops_on_patience_and_keeps_the_best_adapter(tiny_model_dir, tmp_path):
    """A min_delta no step can meet stops training after `patience` validations; the saved
    adapter is the one whose validation loss was lowest, not the last one."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from traitmap.models import load_tokenizer

    cfg = config(steps="auto", max_steps=40, eval_every=2, patience=2, min_delta=10.0, lr=3e-2, warmup_steps=0, r=4,
                 scheduler="constant_with_warmup", validation_examples=len(VALIDATION))
    trained = train_adapter(tiny_model_dir, EXAMPLES, cfg, 0, validation=VALIDATION)
    log = trained.log
    assert (log["steps"], log["stopped_by"], log["converged"]) == (4, "patience", True)
    assert [v["step"] for v in log["validation"]] == [0, 2, 4]
    assert [e["step"] for e in log["log"] if "val_loss" in e] == [2, 4]
    best = min(log["validation"], key=lambda v: v["loss"])
    assert (log["best_step"], log["best_val_loss"], log["kept_step"]) == (best["step"], best["loss"], best["step"])

    save_adapter(trained, tmp_path / "a")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tmp_path / "a")
    tokenizer = load_tokenizer(tiny_model_dir)
    rows = tokenize_examples(tokenizer, VALIDATION, 64, "answer")
    again = validation_loss(model, rows, 2, tokenizer.pad_token_id, torch.device("cpu"), contextlib.nullcontext())
    assert again == pytest.approx(log["best_val_loss"], abs=1e-4)


def test_auto_that_keeps_improving_stops_at_max_steps_unconverged(tiny_model_dir):
    cfg = config(steps="auto", max_steps=3, eval_every=1, patience=5, min_delta=0.0, scheduler="constant_with_warmup",
                 validation_examples=len(VALIDATION))
    log = train_adapter(tiny_model_dir, EXAMPLES, cfg, 0, validation=VALIDATION).log
    assert (log["steps"], log["stopped_by"], log["converged"]) == (3, "max_steps", False)
    assert config(steps="auto", max_steps=3).total_steps(1000) == 3


def test_validation_loss_does_not_depend_on_batching(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = tokenize_examples(tokenizer, EXAMPLES + VALIDATION, 64, "answer")
    one, all_ = (validation_loss(model, rows, size, tokenizer.pad_token_id, torch.device("cpu"), contextlib.nullcontext())
                 for size in (1, len(rows)))
    assert one == pytest.approx(all_, abs=1e-5)


@pytest.mark.parametrize("loss_on", ["answer", "all"])
def test_the_loss_at_labelled_positions_equals_the_full_logits_loss(tiny_model_dir, tokenizer, loss_on):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = tokenize_examples(tokenizer, EXAMPLES, 64, loss_on)
    ids, mask, labels = _padded(rows, tokenizer.pad_token_id)
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    summed, n = answer_loss(model, ids, mask, labels)
    assert n == int((labels[:, 1:] != IGNORE).sum())
    assert (summed / n).item() == pytest.approx(full.item(), abs=1e-5)


def test_truncation_counts_cut_examples_and_lost_answer_ends():
    lengths = [(20, 3), (50, 3), (20, 40), (5, 2)]  # (prompt, answer) tokens
    assert truncation(lengths, 30) == {"max_length": 30, "share_cut": 0.5, "share_answer_end_lost": 0.25,
                                       "share_answer_lost": 0.0}
    assert truncation(lengths, 8)["share_answer_lost"] == 1.0
    assert kept_lengths(50, 3, 30) == (27, 3) and kept_lengths(20, 40, 30) == (8, 22)


def test_auto_max_length_fits_most_examples_within_its_cap():
    lengths = [(10, 2)] * 95 + [(200, 100)] * 5
    assert auto_max_length(lengths, cap=512) == 12
    assert auto_max_length([(400, 300)] * 10, cap=512) == 512


def test_a_source_whose_answers_exceed_max_length_reports_its_truncation(tiny_model_dir, tokenizer):
    long_answers = [dataclasses.replace(ex, target=" ".join(["positive negative"] * 20)) for ex in EXAMPLES]
    log = train_adapter(tiny_model_dir, long_answers, config(max_length=24), 0).log
    assert log["max_length"] == 24 and log["share_cut"] == 1.0 and log["share_answer_end_lost"] == 1.0
    assert log["share_answer_lost"] == 0.0
    rows = tokenize_examples(tokenizer, long_answers, 24, "answer")
    assert all(len(r["input_ids"]) == 24 and r["labels"][:PROMPT_FLOOR] == [IGNORE] * PROMPT_FLOOR for r in rows)

    auto = train_adapter(tiny_model_dir, long_answers, config(max_length="auto", max_length_cap=4096), 0).log
    assert auto["share_cut"] == 0.0 and auto["max_length"] > 24

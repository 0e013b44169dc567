"""Training one LoRA adapter on the tiny model: it learns, masks the prompt, saves a loadable adapter,
and picks its precision from what the machine has."""

import json

import pytest
import torch

from traitmap.study import PRESETS, TrainConfig
from traitmap.tasks import Example
from traitmap.run import save_adapter
from traitmap.train import IGNORE, native_bf16, tokenize_examples, train_adapter, training_precision

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

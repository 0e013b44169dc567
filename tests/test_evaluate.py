"""Scoring and generation give each example the same result whatever shares its batch."""

import json

import pytest
import torch

from traitmap import tasks
from traitmap.evaluate import choice_logprobs, evaluate_cell, generate

PROMPTS = [
    "Question: Janet has 3 apples.\nAnswer:\n",
    "The movie was great, I loved it. The product is bad, it broke in a day.\nSentiment:\n",
    "Is it?\n",
    "def add(a, b): return a + b\nassert add(1, 2) == 3\nAnswer:\n",
    "entailment contradiction premise hypothesis\n",
]
MULTI = ["positive", "negative sentiment", "no"]  # 3, 4 and 1 tokens with the tiny tokenizer
SINGLE = ["yes", "no", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from traitmap.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model with larger random weights: its greedy text varies (the plain one only says '\\n')."""
    from traitmap.models import load_model

    model = load_model(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.3)
    return model


def direct_logprob(model, tokenizer, prompt, choice) -> float:
    """log p(choice | prompt) from one unpadded forward pass."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([p + c], device=model.device)).logits[0].float(), -1)
    return sum(logp[len(p) - 1 + t, tok].item() for t, tok in enumerate(c))


def as_tensor(results, choices):
    return torch.tensor([[r[c] for c in choices] for r in results], dtype=torch.float64)


def test_choice_tokenization_covers_both_paths(tokenizer):
    assert sorted(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in MULTI) == [1, 3, 4]
    assert all(len(tokenizer(c, add_special_tokens=False)["input_ids"]) == 1 for c in SINGLE)


@pytest.mark.parametrize("choices", [MULTI, SINGLE], ids=["multi-token", "single-token"])
def test_choice_logprobs_equal_a_direct_computation(model, tokenizer, choices):
    got = as_tensor(choice_logprobs(model, tokenizer, PROMPTS, choices, batch_size=4), choices)
    want = torch.tensor([[direct_logprob(model, tokenizer, p, c) for c in choices] for p in PROMPTS], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-5)
    assert got.std() > 0.1  # the values differ between prompts and choices: the comparison means something


@pytest.mark.parametrize("choices", [MULTI, SINGLE], ids=["multi-token", "single-token"])
def test_choice_logprobs_do_not_depend_on_batching(model, tokenizer, choices):
    reference = as_tensor(choice_logprobs(model, tokenizer, PROMPTS, choices, batch_size=1), choices)
    for batch_size in (2, 3, 16):
        got = as_tensor(choice_logprobs(model, tokenizer, PROMPTS, choices, batch_size=batch_size), choices)
        assert torch.allclose(got, reference, atol=1e-5), batch_size
    # Other company in the batch: the prompts reversed, and the first prompt alone among others.
    reversed_ = as_tensor(choice_logprobs(model, tokenizer, PROMPTS[::-1], choices, batch_size=3), choices)
    assert torch.allclose(reversed_.flip(0), reference, atol=1e-5)
    mixed = choice_logprobs(model, tokenizer, [PROMPTS[0], "x", "a much longer prompt " * 5], choices, batch_size=3)
    assert torch.allclose(as_tensor(mixed[:1], choices), reference[:1], atol=1e-5)


def test_choice_logprobs_reports_progress(model, tokenizer):
    seen = []
    choice_logprobs(model, tokenizer, PROMPTS, MULTI, batch_size=4, progress=seen.append)
    assert sum(seen) == len(PROMPTS)


def test_generate_does_not_depend_on_batch_size(model, tokenizer):
    one = generate(model, tokenizer, PROMPTS, max_new_tokens=12, stop=[], batch_size=1)
    four = generate(model, tokenizer, PROMPTS, max_new_tokens=12, stop=[], batch_size=4)
    assert one == four
    assert len({text for text, _ in one}) == len(PROMPTS)  # varied text, not one repeated token
    assert all(n == 12 for _, n in one)


def test_generate_cuts_at_the_first_stop_string(model, tokenizer):
    [(text, _)] = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=20, stop=[], batch_size=1)
    start = next(i for i in range(3, len(text) - 1) if text[i:i + 2].isascii() and text[i:i + 2].strip())
    stop = text[start:start + 2]
    expected = text[:text.index(stop)]
    for batch_size in (1, 4):
        outputs = generate(model, tokenizer, PROMPTS, max_new_tokens=20, stop=[stop, "never appears"], batch_size=batch_size)
        cut, n_tokens = outputs[0]
        assert cut == expected
        assert n_tokens == len(tokenizer(expected, add_special_tokens=False)["input_ids"])
        assert all(stop not in t for t, _ in outputs)


def test_evaluate_cell_on_a_choice_task(model, tokenizer, data_dir):
    task = tasks.get("imdb")
    examples = task.examples("test", data_dir, limit=4, seed=0)
    records = evaluate_cell(model, tokenizer, task, examples, model_name="fk", seed=3, batch_size=2)
    assert [r["example_id"] for r in records] == [ex.id for ex in examples]
    for r, ex in zip(records, examples):
        logprobs = json.loads(r["logprobs"])
        assert set(logprobs) == set(task.choices)
        assert r["output"] == r["parsed"] == max(logprobs, key=logprobs.get)
        assert r["correct"] == float(r["output"] == ex.gold)
        assert (r["model"], r["seed"], r["task"], r["gold"], r["prompt"]) == ("fk", 3, "imdb", ex.gold, ex.prompt)


def test_evaluate_cell_on_a_generate_task(model, tokenizer, data_dir):
    task = tasks.get("gsm8k")
    examples = task.examples("test", data_dir, limit=3, seed=0)
    records = evaluate_cell(model, tokenizer, task, examples, model_name="base", seed=-1, batch_size=2, max_new_tokens=5)
    assert len(records) == 3
    for r in records:
        assert r["logprobs"] == "" and 0 <= r["output_tokens"] <= 5
        parsed = task.parse(r["output"])
        assert r["parsed"] == ("" if parsed is None else str(parsed))
        assert r["correct"] in (0.0, 1.0)

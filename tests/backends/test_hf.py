"""The hf backend: every request gets the same answer whatever shares its batch — other
prompts, other batch sizes, other adapters, rows that join or leave a continuous batch —
and that answer equals an independent computation (one unpadded forward pass, or
transformers' own greedy `generate` on the prompt alone)."""

import pytest
import torch
from helpers import TINY_PROMPTS as PROMPTS

from traitmap.backends import AdapterRef, Request, get
from traitmap.backends.hf import HFBackend

MULTI = ("positive", "negative sentiment", "no")  # 3, 4 and 1 tokens with the tiny tokenizer
SINGLE = ("yes", "no", "0")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def adapters(model_dir):
    return [None] + [AdapterRef(name, 0, model_dir / "adapters" / name) for name in ("a", "b")]


def backend(model_dir, batch_size) -> HFBackend:
    return HFBackend(model_dir, batch_size=batch_size)


@pytest.fixture(scope="module")
def shared(model_dir):
    return backend(model_dir, 4)


def answers(engine, requests) -> list:
    got = dict(engine.answer(requests))
    assert sorted(got) == list(range(len(requests)))
    return [got[i] for i in range(len(requests))]


def as_tensor(responses, choices):
    return torch.tensor([[r.logprobs[c] for c in choices] for r in responses], dtype=torch.float64)


def direct_logprob(model, tokenizer, prompt, choice) -> float:
    """log p(choice | prompt) from one unpadded forward pass."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
    return sum(logp[len(p) - 1 + t, tok].item() for t, tok in enumerate(c))


def test_the_registry_finds_hf_under_its_name_and_auto():
    assert get("hf") is HFBackend and get("auto") is HFBackend


def test_choice_tokenization_covers_both_paths(shared):
    lengths = sorted(len(shared.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in MULTI)
    assert lengths == [1, 3, 4]
    assert all(len(shared.tokenizer(c, add_special_tokens=False)["input_ids"]) == 1 for c in SINGLE)


@pytest.mark.parametrize("choices", [MULTI, SINGLE], ids=["multi-token", "single-token"])
def test_choice_logprobs_equal_a_direct_computation(shared, choices):
    got = as_tensor(answers(shared, [Request(p, choices=choices) for p in PROMPTS]), choices)
    want = torch.tensor([[direct_logprob(shared.model, shared.tokenizer, p, c) for c in choices] for p in PROMPTS],
                        dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-5)
    assert got.std() > 0.1  # the values differ between prompts and choices: the comparison means something


@pytest.mark.parametrize("choices", [MULTI, SINGLE], ids=["multi-token", "single-token"])
def test_choice_logprobs_do_not_depend_on_batching(model_dir, shared, choices):
    requests = [Request(p, choices=choices) for p in PROMPTS]
    reference = as_tensor(answers(backend(model_dir, 1), requests), choices)
    for batch_size in (2, 3, 16):
        assert torch.allclose(as_tensor(answers(backend(model_dir, batch_size), requests), choices), reference, atol=1e-5)
    assert torch.allclose(as_tensor(answers(shared, requests[::-1]), choices).flip(0), reference, atol=1e-5)
    mixed = answers(shared, [requests[0], Request("x", choices=choices), Request("a much longer prompt " * 5, choices=choices)])
    assert torch.allclose(as_tensor(mixed[:1], choices), reference[:1], atol=1e-5)


def test_choice_responses_count_each_choices_tokens(shared):
    [response] = answers(shared, [Request(PROMPTS[0], choices=MULTI)])
    assert response.choice_tokens == {"positive": 3, "negative sentiment": 4, "no": 1}


def test_mixed_adapter_batches_give_each_request_its_own_adapters_answer(model_dir, shared, adapters):
    requests = [Request(p, adapter=a, choices=MULTI) for p in PROMPTS for a in adapters]
    together = as_tensor(answers(shared, requests), MULTI)
    alone = as_tensor([answers(backend(model_dir, 1), [r])[0] for r in requests], MULTI)
    assert torch.allclose(together, alone, atol=1e-5)
    by_adapter = together.reshape(len(PROMPTS), len(adapters), len(MULTI))
    assert (by_adapter[:, 1] - by_adapter[:, 0]).abs().max() > 0.1  # the adapters really change the answers
    assert (by_adapter[:, 2] - by_adapter[:, 1]).abs().max() > 0.1


def reference_greedy(model_dir, adapter, prompt, max_new_tokens) -> list[int]:
    """transformers' own greedy decoding of one unpadded prompt (with the adapter merged in)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter.path).merge_and_unload()
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    out = model.eval().generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id, eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_text_equals_transformers_generate_on_the_prompt_alone(model_dir, shared, adapters):
    requests = [Request(p, adapter=a, max_new_tokens=10) for p in PROMPTS[:3] for a in adapters]
    for request, response in zip(requests, answers(shared, requests)):
        want = reference_greedy(model_dir, request.adapter, request.prompt, 10)
        assert response.text == shared.tokenizer.decode(want, skip_special_tokens=True)
        assert response.tokens == 10


def test_continuous_batches_do_not_change_any_answer(model_dir, adapters):
    # Token limits from 2 to 14: rows finish at different steps, so rows leave and waiting
    # ones join mid-batch; every batch size must give the same text.
    requests = [Request(p, adapter=a, max_new_tokens=2 + (3 * i + k) % 13)
                for i, p in enumerate(PROMPTS) for k, a in enumerate(adapters)]
    reference = [(r.text, r.tokens) for r in answers(backend(model_dir, 1), requests)]
    assert len({text for text, _ in reference}) > len(PROMPTS)  # varied text, not one repeated token
    assert [n for _, n in reference] == [r.max_new_tokens for r in requests]
    for batch_size in (2, 4, 7):
        assert [(r.text, r.tokens) for r in answers(backend(model_dir, batch_size), requests)] == reference
    assert [(r.text, r.tokens) for r in answers(backend(model_dir, 4), requests[::-1])] == reference[::-1]


def test_generation_cuts_at_the_first_stop_string(model_dir, shared):
    [free] = answers(shared, [Request(PROMPTS[0], max_new_tokens=20)])
    text = free.text
    start = next(i for i in range(3, len(text) - 1) if text[i:i + 2].isascii() and text[i:i + 2].strip())
    stop = text[start:start + 2]
    expected = text[:text.index(stop)]
    for batch_size in (1, 4):
        responses = answers(backend(model_dir, batch_size),
                            [Request(p, max_new_tokens=20, stop=(stop, "never appears")) for p in PROMPTS])
        assert responses[0].text == expected
        assert responses[0].tokens == len(shared.tokenizer(expected, add_special_tokens=False)["input_ids"])
        assert all(stop not in r.text for r in responses)


def test_choice_and_generate_requests_in_one_call(shared, adapters):
    requests = [Request(PROMPTS[0], adapter=adapters[1], choices=SINGLE), Request(PROMPTS[1], max_new_tokens=3)]
    choice, generated = answers(shared, requests)
    assert set(choice.logprobs) == set(SINGLE) and generated.tokens == 3 and generated.logprobs == {}


def test_progress_counts_every_request_once(shared, adapters):
    seen = []
    requests = [Request(p, adapter=a, choices=MULTI) for p in PROMPTS for a in adapters]
    requests += [Request(p, max_new_tokens=4) for p in PROMPTS]
    list(shared.answer(requests, seen.append))
    assert sum(seen) == len(requests)


@pytest.mark.parametrize("how", ["missing", "no-weights", "garbage"])
def test_a_broken_adapter_is_an_error_never_the_base_model(model_dir, tmp_path, how):
    import shutil

    from traitmap.errors import TraitmapError

    folder = tmp_path / "broken"
    if how != "missing":
        shutil.copytree(model_dir / "adapters" / "a", folder)
        weights = folder / "adapter_model.safetensors"
        if how == "no-weights":
            from safetensors.torch import load_file, save_file

            save_file({k: v for k, v in load_file(weights).items() if "q_proj" not in k}, weights)
        else:
            weights.write_bytes(b"not a safetensors file")
    with pytest.raises(TraitmapError, match="adapter 'broken'"):
        answers(backend(model_dir, 2), [Request(PROMPTS[0], adapter=AdapterRef("broken", 0, folder), choices=SINGLE)])

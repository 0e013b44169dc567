"""The backend tests' model: the tiny model with varied greedy text, and two LoRA adapters."""

import pytest
import torch


@pytest.fixture(scope="session")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with larger random weights (the plain one only ever says '\\n'), saved,
    and two random LoRA adapters for it in adapters/a and adapters/b."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("noisy-model")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.3)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    for name, seed in (("a", 2), ("b", 3)):
        torch.manual_seed(seed)
        lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                          init_lora_weights=False)
        get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), lora).save_pretrained(
            folder / "adapters" / name)
    return folder

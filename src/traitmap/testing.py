"""A tiny random model and the micro study on it: the whole pipeline (train, evaluate,
analyse) runs on them in seconds on a CPU. The tests and benchmarks use them, and so can
the author of an engine or executor plug-in, to check it against the built-in `hf` path:

    from traitmap.testing import MICRO_STUDY, tiny_model
    Path("micro.toml").write_text(MICRO_STUDY.format(model=tiny_model(Path("tiny"))))
"""

from __future__ import annotations

from pathlib import Path

# Two sources and three targets; `model` is a folder or a model name.
MICRO_STUDY = '''name = "micro"
base_model = "{model}"
sources = ["flipkart", "gsm8k"]
targets = ["imdb", "gsm8k", "goat"]

[train]
steps = 2
examples = 8
batch_size = 2
max_length = 64

[eval]
examples = 4
batch_size = 4
max_new_tokens = {{gsm8k = 6, goat = 6}}
'''
MICRO_SOURCES, MICRO_TARGETS = ["flipkart", "gsm8k"], ["imdb", "gsm8k", "goat"]

# The tokenizer's training text: the words of the built-in tasks' prompts and answers.
CORPUS = [
    "What is the sentiment of the below sentence? positive negative neutral",
    "Question: Janet has 3 apples and buys 4 more. How many apples? Answer: 7 #### 7",
    "The movie was great, I loved it. The product is bad, it broke in a day.",
    "Is the following tweet offensive? yes no. Are the two sentences paraphrases?",
    "entailment contradiction premise hypothesis 0 1 2 3 4 5 6 7 8 9 + - * / = R",
    "def add(a, b): return a + b\nassert add(1, 2) == 3",
]


def tiny_model(folder: Path) -> Path:
    """A 2-layer Llama with random weights (seed 0) and a 400-token BPE tokenizer trained on
    CORPUS, saved in `folder` unless one is there already; the same bytes on every call."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder

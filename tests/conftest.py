"""Shared fixtures: the real data dir, a tiny randomly initialised model built here, and
the micro study trained on it once per session.

The tiny model is a 2-layer Llama with a BPE tokenizer trained on a few sentences: the
whole pipeline runs on it in seconds, so unit tests never need the real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_config, require_data_dir, run_study, torch_threads


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the whole module (see helpers.torch_threads)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_data_dir()


CORPUS = [
    "What is the sentiment of the below sentence? positive negative neutral",
    "Question: Janet has 3 apples and buys 4 more. How many apples? Answer: 7 #### 7",
    "The movie was great, I loved it. The product is bad, it broke in a day.",
    "Is the following tweet offensive? yes no. Are the two sentences paraphrases?",
    "entailment contradiction premise hypothesis 0 1 2 3 4 5 6 7 8 9 + - * / = R",
    "def add(a, b): return a + b\nassert add(1, 2) == 3",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-model")
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def install_package(tmp_path, monkeypatch):
    """Install a throw-away package as pip leaves one: `install_package(name, source, entry_points)`
    writes the module `name` and its dist-info (METADATA, entry_points.txt, with
    entry_points = {group: {plug-in name: "module:attribute"}}) into a folder on sys.path,
    where importlib.metadata finds it. The module is forgotten after the test."""
    import sys

    installed = []

    def install(name: str, source: str, entry_points: dict[str, dict[str, str]]) -> None:
        site = tmp_path / "site-packages"
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(source)
        info = site / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items())
            for group, points in entry_points.items()))
        monkeypatch.syspath_prepend(str(site))
        installed.append(name)

    yield install
    for name in installed:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def micro_study(tmp_path_factory, tiny_model_dir, data_dir):
    """The micro study (helpers.MICRO_STUDY) trained and evaluated once for the whole session:
    (config, output folder). Read it as it is; change only a copy (helpers.copy_of)."""
    folder = tmp_path_factory.mktemp("micro")
    config = make_config(folder, tiny_model_dir)
    with torch_threads(1):
        run_study(config, folder / "out", data_dir)
    return config, folder / "out"

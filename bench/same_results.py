"""Did a change alter results? Runs a micro study on a tiny random model with whatever
traitmap is on sys.path and writes matrix.csv and the sorted records, to compare byte for
byte with another version's:

    PYTHONPATH=<old checkout>/src python bench/same_results.py MODEL_DIR before DATA_DIR
    PYTHONPATH=src python bench/same_results.py MODEL_DIR after DATA_DIR
    cmp before/run/matrix.csv after/run/matrix.csv && cmp before/records.csv after/records.csv

MODEL_DIR is built on first use. A version from before `traitmap.config` reads the study
with `traitmap.study` and takes a console."""
import inspect, io, sqlite3, sys
from pathlib import Path

import pandas as pd
import torch

STUDY = '''name = "micro"
base_model = "{model}"
sources = ["flipkart", "gsm8k"]
targets = ["imdb", "gsm8k", "goat"]

[train]
steps = 3
examples = 12
batch_size = 2
max_length = 64

[eval]
examples = 8
batch_size = 4
max_new_tokens = {{gsm8k = 6, goat = 6}}
'''


def tiny_model(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    corpus = ["What is the sentiment of the below sentence? positive negative neutral",
              "Question: what is 12 plus 30? Answer: 42", "def add(a, b): return a + b"]
    if (folder / "config.json").is_file():
        return folder
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def main(model_dir: str, out: str, data_dir: str) -> None:
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = tiny_model(Path(model_dir))
    (out / "micro.toml").write_text(STUDY.format(model=model))
    try:
        from traitmap.config import load
    except ImportError:
        from traitmap.study import load
    from traitmap import run
    config = load(out / "micro.toml")
    options = {}
    if "console" in inspect.signature(run.run_study).parameters:
        from rich.console import Console
        options["console"] = Console(file=io.StringIO())
    run.run_study(config, out / "run", Path(data_dir), steps=("train", "evaluate"), **options)
    with sqlite3.connect(out / "run" / "traitmap.sqlite") as db:
        records = pd.read_sql("select * from records", db)
    records.sort_values(list(records.columns[:4])).to_csv(out / "records.csv", index=False)
    print(run.__file__)


if __name__ == "__main__":
    main(*sys.argv[1:])

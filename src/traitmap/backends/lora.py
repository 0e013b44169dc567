"""Many LoRA adapters on one frozen base model, chosen row by row within a batch.

Each linear layer that an adapter targets is wrapped once; every loaded adapter has a
slot in it (slot 0 is "no adapter": zeros). Before a forward pass the caller says which
slot each row uses, and the layer adds `x @ A[slot].T @ B[slot].T` to the base output
with two batched matrix products, the way Punica and S-LoRA serve many adapters.
PEFT's own mixed-batch path (`adapter_names`) copies each adapter's rows out and back
in every layer, which cost about a third of the evaluation time here.

Only plain LoRA is supported (what `traitmap.train` writes): an adapter with DoRA, bias
or other variants is refused rather than answered wrongly. A row's result depends only
on that row: the products are per row, and rank padding adds exact zeros.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from traitmap.errors import TraitmapError

PREFIX = "base_model.model."


class Rows:
    """Which adapter slot each row of the next forward pass uses (shared by all layers)."""

    def __init__(self):
        self.slots: torch.Tensor | None = None


class MultiLoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, rows: Rows):
        super().__init__()
        self.base, self.rows = base, rows
        zeros = dict(device=base.weight.device, dtype=torch.float32)  # LoRA weights stay fp32, as PEFT keeps them
        self.a: list[torch.Tensor] = [torch.zeros(1, base.in_features, **zeros)]   # [r, in] per slot
        self.b: list[torch.Tensor] = [torch.zeros(base.out_features, 1, **zeros)]  # [out, r], scaling folded in
        self.stacked: tuple[torch.Tensor, torch.Tensor] | None = None

    def add(self, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """A new slot: this adapter's update for this layer, or none if it does not target it."""
        self.a.append(a if a is not None else self.a[0])
        self.b.append(b if b is not None else self.b[0])
        rank = max(t.shape[0] for t in self.a)
        self.stacked = (
            torch.stack([nn.functional.pad(t, (0, 0, 0, rank - t.shape[0])) for t in self.a]),
            torch.stack([nn.functional.pad(t, (0, rank - t.shape[1])) for t in self.b]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        slots = self.rows.slots
        if slots is None or self.stacked is None:
            return out
        a, b = self.stacked[0][slots], self.stacked[1][slots]  # [rows, r, in], [rows, out, r]
        # in the adapters' fp32 even on a bf16 base model, as PEFT computes LoRA (no-op casts in fp32)
        delta = torch.bmm(torch.bmm(x.to(a.dtype), a.transpose(1, 2)), b.transpose(1, 2))
        return out + delta.to(out.dtype)


class AdapterBank:
    """The adapters loaded into one base model, each with a slot number."""

    def __init__(self, model: nn.Module):
        self.model, self.rows = model, Rows()
        self.slots: dict[str, int] = {}
        self.layers: dict[str, MultiLoraLinear] = {}

    def load(self, key: str, folder: Path) -> int:
        """Load the adapter in `folder` (PEFT format) into a new slot; its number."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        unsupported = [k for k in ("use_dora", "use_rslora") if config.get(k)] + (
            ["bias"] if config.get("bias", "none") != "none" else [])
        if config.get("peft_type", "LORA") != "LORA" or unsupported:
            raise TraitmapError(f"only plain LoRA adapters can be evaluated (this one uses "
                                f"{', '.join(unsupported) or config.get('peft_type')})", file=folder / "adapter_config.json")
        scaling = config["lora_alpha"] / config["r"]
        weights = load_file(folder / "adapter_model.safetensors")
        found: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in weights.items():
            if not (name.startswith(PREFIX) and name.endswith((".lora_A.weight", ".lora_B.weight"))):
                raise TraitmapError(f"unexpected weight '{name}' in a LoRA adapter", file=folder / "adapter_model.safetensors")
            module, part = name[len(PREFIX):].rsplit(".", 2)[:2]
            found.setdefault(module, {})[part] = tensor
        modules = dict(self.model.named_modules())
        targeted = {name for name, m in modules.items()
                    if isinstance(m, (nn.Linear, MultiLoraLinear)) and _targets(config["target_modules"], name)}
        missing = sorted(targeted - {m for m, parts in found.items() if len(parts) == 2})
        if missing:
            raise TraitmapError(f"{len(missing)} weights missing, e.g. {missing[0]}", file=folder / "adapter_model.safetensors")
        strange = sorted(set(found) - targeted)
        if strange:
            raise TraitmapError(f"weights for a layer this base model does not have: {strange[0]}",
                                file=folder / "adapter_model.safetensors")
        device = next(self.model.parameters()).device
        for name in targeted:
            if name not in self.layers:
                self._wrap(name, modules[name])
        slot = len(self.slots) + 1
        for name, layer in self.layers.items():
            if name in found:
                a, b = found[name]["lora_A"], found[name]["lora_B"] * scaling
                layer.add(a.to(device, torch.float32), b.to(device, torch.float32))
            else:
                layer.add(None, None)
        self.slots[key] = slot
        return slot

    def _wrap(self, name: str, linear: nn.Linear) -> None:
        parent_name, _, child = name.rpartition(".")
        wrapped = MultiLoraLinear(linear, self.rows)
        for _ in self.slots:  # adapters loaded earlier do not target this layer
            wrapped.add(None, None)
        setattr(self.model.get_submodule(parent_name), child, wrapped)
        self.layers[name] = wrapped

    def route(self, slots: list[int]) -> None:
        """The slot of each row of the next forward passes."""
        self.rows.slots = torch.tensor(slots, device=next(self.model.parameters()).device) if self.slots else None


def _targets(target_modules, name: str) -> bool:
    """PEFT's rule: a list matches the module name's last part(s); a string is a regex of the full name."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


"""Checkpoints: safetensors of full (unsharded) tensors + a JSON file that describes them.

A checkpoint directory holds `model.safetensors`, optionally `optim.safetensors` (AdamW
moments, and the fp32 main weights of a bf16 model) and `checkpoint.json` (step, fingerprint
of what is being trained, the log so far, RNG state, and the sha256 of each tensor file). It is
written under a temporary name and renamed into place, and `checkpoint.json` is written last, so a directory without a valid
manifest is never taken as complete. Tensors are full, so a checkpoint loads at any
tensor-parallel size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bar import parallel


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(*paths: Path) -> str:
    """A short digest of the files at `paths` (a folder: every file in it, with its name)."""
    h = hashlib.sha256()
    for path in paths:
        for f in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


# How a run is laid out over processes and memory, not what it computes: a checkpoint saved at one
# layout resumes at another (the weights agree to float rounding, as they do across thread counts).
LAYOUT = ("tp_size", "dp_size", "micro_batch_size", "recompute")


def fingerprint(resolved: dict, inputs: list[Path]) -> str:
    """What a checkpoint belongs to: the resolved spec but its `LAYOUT` keys, and the content of
    every input."""
    spec = json.dumps(_without_layout(resolved), sort_keys=True)
    return hashlib.sha256((spec + file_digest(*inputs)).encode()).hexdigest()[:16]


def _without_layout(value):
    if isinstance(value, dict):
        return {k: _without_layout(v) for k, v in value.items() if k not in LAYOUT}
    if isinstance(value, list):
        return [_without_layout(v) for v in value]
    return value


def without_eval(resolved: dict) -> dict:
    """A resolved spec without its `eval` section: what trained weights depend on."""
    return {k: v for k, v in resolved.items() if k != "eval"}


def full_state(model) -> dict[str, torch.Tensor]:
    """Every parameter of the model as a full tensor in host memory, on every rank (Megatron names)."""
    return {name: parallel.full_tensor(p).contiguous().cpu() for name, p in model.named_parameters()}


def load_state(
    model, state: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], strict: bool = True
) -> None:
    """Copy full tensors (a mapping, or (name, tensor) pairs as they come) into this rank's shards
    of the model's parameters; `strict`: every parameter must get one."""
    params = dict(model.named_parameters())
    loaded = set()
    with torch.no_grad():
        for name, full in state.items() if isinstance(state, Mapping) else state:
            if (p := params.get(name)) is None:
                continue
            shard = parallel.local_shard(p, full)
            if shard.shape != p.shape:
                raise ValueError(
                    f"{name}: checkpoint shape {tuple(full.shape)} does not fit {tuple(p.shape)} at this tensor-parallel size"
                )
            p.copy_(shard)
            loaded.add(name)
    missing = sorted(set(params) - loaded)
    if strict and missing:
        raise KeyError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[:3]}")


def write(path: Path, tensors: dict[str, dict[str, torch.Tensor]], meta: dict) -> None:
    """Atomically create directory `path` with one safetensors file per entry and checkpoint.json."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for stem, state in tensors.items():
        save_file(state, tmp / f"{stem}.safetensors")
        files[f"{stem}.safetensors"] = sha256(tmp / f"{stem}.safetensors")
    (tmp / "checkpoint.json").write_text(json.dumps({**meta, "files": files}, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def read_meta(path: Path) -> dict | None:
    """The manifest of a complete checkpoint, or None if it is missing, partial or corrupt."""
    try:
        meta = json.loads((path / "checkpoint.json").read_text())
        for name, digest in meta["files"].items():
            if sha256(path / name) != digest:
                return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


class Resumable:
    """The rolling checkpoint of one training run under `root` (kept: the newest complete one).

    `fingerprint` identifies what is trained (resolved spec, inputs): a checkpoint with another
    fingerprint belongs to another configuration and is never resumed.
    """

    def __init__(self, root: Path, fingerprint: str):
        self.root, self.fingerprint = Path(root), fingerprint

    def _steps(self) -> list[Path]:
        return sorted(self.root.glob("step_*"), reverse=True) if self.root.exists() else []

    def latest(self) -> tuple[Path, dict] | None:
        for path in self._steps():
            meta = read_meta(path)
            if meta and meta.get("fingerprint") == self.fingerprint:
                return path, meta
        return None

    def save(self, step: int, model, optimizer, extra: dict) -> None:
        """Collective: every rank gathers, rank 0 writes."""
        state, optim = full_state(model), optimizer.state_tensors()
        if parallel.rank() == 0:
            path = self.root / f"step_{step:07d}"
            write(path, {"model": state, "optim": optim}, {"step": step, "fingerprint": self.fingerprint, **extra})
            for old in self._steps():
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def restore(self, model, optimizer) -> dict | None:
        """Load the newest matching checkpoint into model and optimizer; its manifest, or None."""
        found = parallel.broadcast_object(self.latest() if parallel.rank() == 0 else None)
        if found is None:
            return None
        path, meta = found
        load_state(model, load_file(path / "model.safetensors"))
        optimizer.load_state_tensors(load_file(path / "optim.safetensors"))
        return meta

    def finish(self, model, extra: dict) -> None:
        """Collective: record the finished model in `<root>/final` (what a re-run skips to)."""
        state = full_state(model)
        if parallel.rank() == 0:
            write(self.root / "final", {"model": state}, {"fingerprint": self.fingerprint, **extra})
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def finished(self) -> dict | None:
        """The manifest of this run's `final` if it is complete and matches the fingerprint."""
        meta = read_meta(self.root / "final") if parallel.rank() == 0 else None
        meta = parallel.broadcast_object(meta)
        return meta if meta and meta.get("fingerprint") == self.fingerprint else None

    def load_finished(self, model) -> None:
        load_state(model, load_file(self.root / "final" / "model.safetensors"))

    def clear(self) -> None:
        if parallel.rank() == 0:
            shutil.rmtree(self.root, ignore_errors=True)

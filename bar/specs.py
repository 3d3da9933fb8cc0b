"""The YAML specs, validated at the boundary.

`specs/*.yaml` are hand-written; `params.yaml` is the pipeline index DVC reads. A preset
(`params.yaml: preset`) overlays `specs/presets/<preset>.yaml` on the spec files, section by
section, so the `tiny` test run is the default run scaled down, not a second set of specs.

Every model forbids unknown keys and is frozen. A bad spec raises `SpecError` with one line
naming the file, the key path, the value and what is allowed, before any work starts.
This module imports nothing heavier than pydantic and yaml.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DOMAINS = ("general", "math", "code", "tool_use", "safety")  # built in: a generator and a verifier each
Domain = Literal["general", "math", "code", "tool_use", "safety"]
# Any domain of specs/data.yaml: a built-in one, or one of the user's (its splits from files).
DomainName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
PositiveInt = Field(gt=0)


class InputError(ValueError):
    """Bad input from the user (a spec, a data file, experts to merge): the message names the
    file, what is wrong in it and how to fix it. Stages end on it with that one line."""


class SpecError(InputError):
    """A spec that cannot be used: the message names file, key path, value and the fix."""


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- specs/model.yaml -------------------------------------------------------------------


class ModelSpec(Spec):
    """The dense architecture every model of the pipeline shares (experts add FFN slots)."""

    base: str | None = Field(
        None,
        description="a local transformers Llama directory under data/base/ that "
        "pretrain_base imports instead of pre-training (its config.json sets the architecture)",
    )
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_query_groups: int = Field(gt=0, description="key/value heads (grouped-query attention)")
    ffn_hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0, description="embedding rows; the tokenizer is trained to at most this")
    seq_length: int = Field(gt=0)
    rope_base: float = Field(10000.0, gt=0)
    rope_scaling_factor: float | None = Field(
        None,
        gt=0,
        description="Llama 3.x RoPE scaling (its `factor`; low/high frequency factors 1 and 4, original context 8192)",
    )
    norm_eps: float = Field(1e-5, gt=0)
    init_std: float = Field(0.02, gt=0)
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description=(
            "what every stage trains, stores and decodes in; bf16: bf16 weights and activations, fp32 main "
            "weights, optimizer state, gradient accumulation, router logits and loss"
        ),
    )

    @model_validator(mode="after")
    def _heads(self) -> ModelSpec:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}"
            )
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"num_query_groups={self.num_query_groups} must divide num_attention_heads={self.num_attention_heads}"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16}[self.precision]


# Llama 3.x's RoPE scaling as Megatron-Core applies it (only `factor` varies).
LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def base_architecture(folder: Path) -> dict[str, Any]:
    """The `ModelSpec` keys a local `transformers` Llama directory fixes (json only: no torch).

    `vocab_size` (embedding rows) makes room for bar's special tokens the tokenizer lacks
    (`bar.tokenizer.missing_specials`), rounded up to a multiple of 64."""
    from bar.tokenizer import missing_specials, saved_tokens

    if not folder.is_dir():
        raise InputError(f"no such folder {folder}")
    needed = ["config.json", "tokenizer.json"]
    if missing := [f for f in needed if not (folder / f).is_file()]:
        raise InputError(
            f"{folder} lacks {', '.join(missing)}: save the model and its fast tokenizer there "
            f"with `model.save_pretrained(dir)` and `tokenizer.save_pretrained(dir)`"
        )
    if not any(folder.glob("*.safetensors")):
        raise InputError(
            f"{folder} has no *.safetensors weights: save them with `model.save_pretrained(dir)` "
            f"(safetensors is its default)"
        )
    config = json.loads((folder / "config.json").read_text())
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    # What each key may be. Mistral without a sliding window is a Llama: the same tensors and maths.
    problems = {
        "model_type": (config.get("model_type"), ["llama", "mistral"]),
        "sliding_window": (config.get("sliding_window"), [None]),
        "hidden_act": (config.get("hidden_act", "silu"), ["silu"]),
        "attention_bias": (config.get("attention_bias", False), [False]),
        "mlp_bias": (config.get("mlp_bias", False), [False]),
    }
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3":  # the scaling Megatron-Core implements, with these constants fixed
        problems |= {f"rope {k}": (rope.get(k), [v]) for k, v in LLAMA3_ROPE.items()}
    else:
        problems["rope type"] = (rope_type, ["default", "llama3"])
    for key, (value, allowed) in problems.items():
        if value not in allowed:
            raise InputError(
                f"{folder / 'config.json'}: {key} = {json.dumps(value)}: bar imports Llama models "
                f"(and Mistral's: RMSNorm, SwiGLU, RoPE or Llama 3's scaled RoPE, full attention, no "
                f"biases): {key} must be {' or '.join(json.dumps(a) for a in allowed)}"
            )
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim * heads != config["hidden_size"]:
        raise InputError(
            f"{folder / 'config.json'}: head_dim = {head_dim}: bar's models have "
            f"head_dim = hidden_size / num_attention_heads = {config['hidden_size'] // heads}"
        )
    tokens, size = saved_tokens(folder)
    rows = max(config["vocab_size"], size + len(missing_specials(tokens)))
    return {
        "num_layers": config["num_hidden_layers"],
        "hidden_size": config["hidden_size"],
        "num_attention_heads": heads,
        "num_query_groups": config.get("num_key_value_heads") or heads,
        "ffn_hidden_size": config["intermediate_size"],
        "vocab_size": -(-rows // 64) * 64,
        "rope_base": float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        "rope_scaling_factor": float(rope["factor"]) if rope_type == "llama3" else None,
        "norm_eps": float(config.get("rms_norm_eps", 1e-6)),
    }


# --- specs/tokenizer.yaml ---------------------------------------------------------------


class TokenizerSpec(Spec):
    """Byte-level BPE trained on the prepared corpus; its size is ModelSpec.vocab_size."""

    min_frequency: int = Field(2, gt=0)
    num_reserved_tokens: int = Field(8, ge=0, description="<|reserved_i|> tokens for later use")


# --- specs/data.yaml --------------------------------------------------------------------


SPLIT_NAMES = ("midtrain", "sft", "rl", "anchor", "eval")


class DomainDataSpec(Spec):
    """How many items of each split a domain's generator makes, or user files that replace them."""

    midtrain: int = Field(0, ge=0, description="plain-text documents for mid-training")
    sft: int = Field(0, ge=0, description="prompt/response pairs")
    rl: int = Field(0, ge=0, description="prompts with a verifier, for RLVR")
    anchor: int = Field(0, ge=0, description="prompt/response pairs in the anchor's post-training mix")
    eval: int = Field(0, ge=0, description="held-out prompts, never in any training split (or files.eval)")
    files: dict[Literal["midtrain", "sft", "rl", "anchor", "eval"], str] = Field(
        default_factory=dict, description="user data (JSONL file or saved `datasets` dir) per split"
    )
    skip_bad_rows: bool = False
    verifier: str | None = Field(
        None,
        description="a domain of yours: data/<file>.py defining verify(response, "
        "check) -> bool (the RLVR reward and the score); default: exact match",
    )


class DataSpec(Spec):
    seed: int = Field(ge=0)
    pretrain: dict[Domain, int] = Field(description="documents per built-in domain in the pre-training corpus")
    domains: dict[DomainName, DomainDataSpec] = Field(
        description=f"built in: {', '.join(DOMAINS)}; any other name is a domain of yours, its splits from files"
    )

    @model_validator(mode="after")
    def _sizes(self) -> DataSpec:
        if any(n < 0 for n in self.pretrain.values()) or sum(self.pretrain.values()) == 0:
            raise ValueError("pretrain needs a positive number of documents (counts are >= 0)")
        if "general" not in self.domains:
            raise ValueError("domains must include 'general' (the anchor's chat data)")
        return self


# --- specs/train.yaml -------------------------------------------------------------------


class OptimSpec(Spec):
    lr: float = Field(gt=0)
    min_lr: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm, 0 = off")

    @model_validator(mode="after")
    def _lrs(self) -> OptimSpec:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr} must not exceed lr={self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas} must be in [0, 1)")
        return self


class TrainSpec(Spec):
    """One training stage: how long, how big a batch, which optimiser, how parallel."""

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="sequences of model.seq_length tokens per step")
    optim: OptimSpec
    tp_size: int = Field(1, gt=0, description="tensor-parallel processes (torchrun --nproc-per-node)")
    checkpoint_every: int = Field(50, gt=0, description="steps between resumable checkpoints")


class TrainStagesSpec(Spec):
    pretrain: TrainSpec
    anchor: TrainSpec


# --- specs/experts/<name>.yaml ----------------------------------------------------------

Group = Literal["domain_ffn", "router", "embeddings", "lm_head", "attention", "norms"]
GROUPS: tuple[str, ...] = Group.__args__
# The published BAR recipe: progressive unfreezing from mid-training to RLVR. The anchor's
# FFN (expert slot 0) is in no group: it never trains.
RECIPE: dict[str, list[str]] = {
    "midtrain": ["domain_ffn", "router"],
    "sft": ["domain_ffn", "router", "embeddings", "lm_head"],
    "rlvr": list(GROUPS),
}
EXPERT_STAGES = ("midtrain", "sft", "rlvr")


class MixtureSpec(Spec):
    """What mix_data@<expert> draws from the prepared domain pools."""

    sources: dict[DomainName, float] = Field(description="domain -> weight (normalised over sources)")
    general_share: float = Field(0.0, ge=0, lt=1, description="share of general chat in the SFT mix")
    sizes: dict[Literal["midtrain", "sft", "rl"], int] = Field(description="items per split")

    @model_validator(mode="after")
    def _check(self) -> MixtureSpec:
        if not self.sources or any(w <= 0 for w in self.sources.values()):
            raise ValueError("sources needs at least one domain, each with a weight > 0")
        if any(n < 0 for n in self.sizes.values()):
            raise ValueError(f"sizes must be >= 0, got {self.sizes}")
        return self


class ExpertStageSpec(Spec):
    steps: int = Field(gt=0)
    optim: OptimSpec
    trainable: list[Group] = Field(min_length=1, description=f"parameter groups that train: {GROUPS}")
    lr_scale: dict[Group, float] = Field(
        default_factory=dict, description=("learning-rate multiplier of a trainable group (1 if not listed)")
    )
    checkpoint_every: int = Field(50, gt=0)

    @model_validator(mode="after")
    def _unique(self) -> ExpertStageSpec:
        if len(set(self.trainable)) != len(self.trainable):
            raise ValueError(f"trainable lists a group twice: {self.trainable}")
        idle = sorted(set(self.lr_scale) - set(self.trainable))
        if idle:
            raise ValueError(f"lr_scale names groups that do not train here: {idle}; trainable: {self.trainable}")
        if any(v <= 0 for v in self.lr_scale.values()):
            raise ValueError(f"lr_scale values must be > 0, got {self.lr_scale}")
        return self


class LMStageSpec(ExpertStageSpec):
    """midtrain (language modelling on domain text) or sft (assistant-token loss)."""

    batch_size: int = Field(gt=0, description="packed sequences of model.seq_length tokens per step")


class RLVRSpec(ExpertStageSpec):
    """GRPO with the domain's verifier as the reward."""

    prompts_per_step: int = Field(8, gt=0)
    group_size: int = Field(8, gt=1, description="completions sampled per prompt")
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    clip_eps: float = Field(0.2, gt=0, description="PPO ratio clipping")
    kl_coef: float = Field(0.0, ge=0, description="KL penalty to the policy at the start of RLVR")
    updates_per_step: int = Field(1, gt=0, description="optimiser steps per rollout batch")


class ExpertStagesSpec(Spec):
    midtrain: LMStageSpec | None = None
    sft: LMStageSpec | None = None
    rlvr: RLVRSpec | None = None

    def enabled(self) -> list[str]:
        return [name for name in EXPERT_STAGES if getattr(self, name) is not None]


class ExpertSpec(Spec):
    """One domain expert: its data mixture and its adaptation stages (branched from the anchor)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    version: int = Field(ge=1)
    domain: DomainName = Field(description="the domain it is scored on; its verifier is the RL reward")
    description: str = ""
    tp_size: int = Field(1, gt=0)
    mixture: MixtureSpec
    stages: ExpertStagesSpec

    @model_validator(mode="after")
    def _consistent(self) -> ExpertSpec:
        enabled = self.stages.enabled()
        if not enabled:
            raise ValueError(f"stages must enable at least one of {EXPERT_STAGES}")
        for stage in enabled:
            split = "rl" if stage == "rlvr" else stage
            if not self.mixture.sizes.get(split):
                raise ValueError(f"stage {stage} is enabled but mixture.sizes.{split} is not > 0")
        return self


# --- specs/merge.yaml and specs/router.yaml ---------------------------------------------


class MergeSpec(Spec):
    """How the experts' shared tensors (embeddings, attention, norms, LM head) are combined."""

    strategy: Literal["mean", "weighted_mean", "base_plus_mean_delta", "disjoint_mean"] = "mean"
    weights: dict[str, float] = Field(default_factory=dict, description="expert -> weight (weighted_mean)")
    delta_scale: float = Field(1.0, gt=0, description="base_plus_mean_delta: anchor + scale * mean delta")

    @model_validator(mode="after")
    def _weights(self) -> MergeSpec:
        if self.strategy == "weighted_mean" and not self.weights:
            raise ValueError("strategy weighted_mean needs weights: {expert: weight, ...}")
        if any(w <= 0 for w in self.weights.values()):
            raise ValueError(f"weights must be > 0, got {self.weights}")
        return self


class RouterSpec(Spec):
    """Router fitting: only the router trains, on a stratified sample of the experts' SFT data."""

    sample_fraction: float = Field(0.05, gt=0, le=1, description="share of each expert's SFT data")
    topk: int | None = Field(None, gt=0, description="experts active per token; null = all")
    sequence_topk: int | None = Field(
        None,
        gt=0,
        description="at inference, each sequence is served by the "
        "anchor and the k experts the router favours over its prompt; null = "
        "every expert, token by token (the published recipe)",
    )
    z_loss: float = Field(1e-3, ge=0, description="router z-loss coefficient")
    load_balancing: float = Field(0.0, ge=0, description="aux load-balancing coefficient (0 = off)")
    domain_loss: float = Field(
        0.0,
        ge=0,
        description="weight of a term asking each token of expert i's "
        "sample to be routed as expert i did, between the anchor and i (0 = LM loss only)",
    )
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    optim: OptimSpec
    tp_size: int = Field(1, gt=0)
    checkpoint_every: int = Field(50, gt=0)


# --- specs/eval.yaml --------------------------------------------------------------------


class EvalSpec(Spec):
    """How held-out prompts are answered (greedy) and scored."""

    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(32, gt=0, description="prompts decoded together")
    num_examples: int | None = Field(None, gt=0, description="first N of each eval split; null = all")


# --- params.yaml ------------------------------------------------------------------------


class ParamsSpec(Spec):
    """The pipeline index DVC reads: which preset, which experts, the training seed."""

    preset: str = Field(pattern=r"^[a-z0-9_]+$")
    seed: int = Field(ge=0)
    experts: list[str] = Field(default_factory=list)
    baselines: list[str] = Field(
        default_factory=list,
        description=("what `dvc repro baselines/dvc.yaml` trains: monolithic, sequential, or an ablation expert spec"),
    )


# --- loading ----------------------------------------------------------------------------

# --- specs/promotion.yaml ---------------------------------------------------------------


class PromotionSpec(Spec):
    """The gate of the upgrade flow: when a new routed model becomes `champion`."""

    min_gain: float = Field(0.0, ge=0, description="points the upgraded expert's domain must gain (strictly more)")
    tolerance: float = Field(2.0, ge=0, description="points any other domain may drop at most")


# --- specs/baselines.yaml ---------------------------------------------------------------


class BaselinesSpec(Spec):
    """The baselines BAR is compared with (opt-in, `baselines/dvc.yaml`)."""

    sequential_order: list[str] = Field(
        min_length=1,
        description=("the sequential baseline trains the anchor on these experts' data, one after the other"),
    )


BASELINE_KINDS = ("monolithic", "sequential")  # any other baseline name is an ablation expert spec

SPEC_FILES = {
    "model": ModelSpec,
    "tokenizer": TokenizerSpec,
    "data": DataSpec,
    "train": TrainStagesSpec,
    "eval": EvalSpec,
    "merge": MergeSpec,
    "router": RouterSpec,
    "promotion": PromotionSpec,
    "baselines": BaselinesSpec,
}
# Preset sections: one per spec file, and `experts`, merged over every expert spec.
PRESET_SECTIONS = (*SPEC_FILES, "experts")


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found (expected a YAML spec here)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def _has_path(tree: Any, loc: tuple) -> bool:
    for key in loc:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys the model allows in the mapping that holds `loc`'s last key."""
    fields = model.model_fields
    for key in loc[:-1]:
        field = fields.get(key) if isinstance(key, str) else None
        ann = getattr(field, "annotation", None)
        args = getattr(ann, "__args__", ())
        sub = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None and isinstance(key, str) and args:  # dict[str, Model]: the key is a name
            sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            if not isinstance(key, str) or field is None:
                continue
            return []
        fields = sub.model_fields
    return list(fields)


def inside(path: str, *folder: str) -> bool:
    """`path` is relative and names something inside `folder` (parts of a repository path)."""
    parts = Path(os.path.normpath(path)).parts
    return not Path(path).is_absolute() and parts[: len(folder)] == folder and len(parts) > len(folder)


def validate(
    model: type[Spec],
    data: Any,
    path: Path,
    preset_path: Path | None = None,
    preset_data: Any = None,
    prefix: tuple = (),
) -> Spec:
    """`model` of `data`, or SpecError naming the file (the preset's if it set the key)."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as e:
        # An unknown key (a typo) usually explains a missing one: report it first.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        err = errors[0]
        loc = tuple(err["loc"])
        in_preset = preset_path is not None and bool(loc) and _has_path(preset_data, loc)
        where = preset_path if in_preset else path
        key = ".".join(str(k) for k in (prefix if in_preset else ()) + loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        allowed = ", ".join(_fields_at(model, loc))
        value = f" = {json.dumps(err.get('input'), default=str)}"
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys here: {allowed}"
        elif loc and loc[-1] == "[key]":  # a key of a mapping with fixed key names (e.g. domains)
            key = key.removesuffix(".[key]")
            msg, value = f"unknown key; allowed keys here: {msg.removeprefix('Input should be ')}", ""
        elif err["type"] == "missing":
            msg, value = f"required key is missing; keys here: {allowed}", ""
        elif isinstance(err.get("input"), dict):
            value = ""  # a check across several keys: the message names them
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpecError(f"{where}: {key}{value}: {msg}{more}") from None


class Specs:
    """The validated specs of one repository checkout, loaded on first use.

    `Specs(root).train.anchor` reads `params.yaml`, `specs/train.yaml` and the preset's
    `train` section, and validates them; later accesses reuse the result.
    """

    def __init__(self, root: Path | str = "."):
        self.root = Path(root).resolve()
        self._cache: dict[str, Spec] = {}

    def path(self, name: str) -> Path:
        return self.root / "specs" / f"{name}.yaml"

    @property
    def params(self) -> ParamsSpec:
        if "params" not in self._cache:
            path = self.root / "params.yaml"
            self._cache["params"] = validate(ParamsSpec, read_yaml(path), path)
        return self._cache["params"]

    @property
    def preset_path(self) -> Path:
        return self.root / "specs" / "presets" / f"{self.params.preset}.yaml"

    def _preset(self) -> dict:
        if "preset" not in self._cache:
            path = self.preset_path
            if not path.exists():
                known = sorted(p.stem for p in path.parent.glob("*.yaml"))
                raise SpecError(
                    f"{self.root / 'params.yaml'}: preset = {self.params.preset!r}: "
                    f"no file {path.relative_to(self.root)}; known presets: {', '.join(known)}"
                )
            data = read_yaml(path) or {}
            missing = [s for s in PRESET_SECTIONS if s not in data]
            unknown = [s for s in data if s not in PRESET_SECTIONS]
            if not isinstance(data, dict) or missing or unknown:
                raise SpecError(
                    f"{path}: a preset has the sections {', '.join(PRESET_SECTIONS)} "
                    f"(empty is {{}}): missing {missing}, unknown {unknown}"
                )
            self._cache["preset"] = data
        return self._cache["preset"]

    def _load(self, name: str) -> Spec:
        if name not in self._cache:
            path = self.path(name)
            over = self._preset()[name] or {}
            data = _merge(read_yaml(path), over)
            if name == "model" and isinstance(data, dict) and data.get("base") is not None:
                data = self._with_base(data, path, over)
            self._cache[name] = validate(SPEC_FILES[name], data, path, self.preset_path, over, prefix=(name,))
        return self._cache[name]

    @property
    def model(self) -> ModelSpec:
        return self._load("model")

    def _with_base(self, data: dict, path: Path, over: dict) -> dict:
        """`data` with the architecture of the user's base model (`base`), which the spec may
        repeat but not contradict."""
        base = data["base"]
        if not isinstance(base, str) or not inside(base, "data", "base"):
            raise SpecError(
                f"{path}: base = {json.dumps(base)}: the base model must be a folder under data/base/ "
                f"in the repository (DVC re-runs tokenizer and pretrain_base when it changes); copy or "
                f"`dvc add` it there and write data/base/<name>"
            )
        try:
            arch = base_architecture(self.root / base)
        except InputError as e:
            raise SpecError(f"{path}: base = {json.dumps(base)}: {e}") from None
        for key, value in arch.items():
            if key in data and data[key] != value:
                where, name = (self.preset_path, f"model.{key}") if key in over else (path, key)
                raise SpecError(
                    f"{where}: {name} = {json.dumps(data[key])}: the base {base} has {value}; "
                    f"remove the key (the base sets it) or set it to {value}"
                )
        return data | arch

    @property
    def tokenizer(self) -> TokenizerSpec:
        return self._load("tokenizer")

    @property
    def data(self) -> DataSpec:
        spec = self._load("data")
        for domain, d in spec.domains.items():
            if not d.eval and "eval" not in d.files:
                raise SpecError(
                    f"{self.path('data')}: domains.{domain}: no held-out prompts: set eval > 0 or files.eval"
                )
            if domain not in DOMAINS and (counted := [s for s in SPLIT_NAMES if getattr(d, s) and s not in d.files]):
                raise SpecError(
                    f"{self.path('data')}: domains.{domain}.{counted[0]} = {getattr(d, counted[0])}: "
                    f"{domain!r} is a domain of yours (built in: {', '.join(DOMAINS)}) and nothing "
                    f"generates it: give files.{counted[0]}: data/<file> instead of a count"
                )
            for split, file in d.files.items():
                # User data: paths relative to the repository, under data/, which dvc.yaml lists as a
                # dependency of prepare_data (so that DVC re-runs it when the data changes).
                if not inside(file, "data"):
                    raise SpecError(
                        f"{self.path('data')}: domains.{domain}.files.{split} = {file!r}: user data "
                        f"must be under data/ in the repository (DVC re-runs prepare_data when "
                        f"something there changes, and only there); copy or `dvc add` it there "
                        f"and write data/<name>"
                    )
                if not (self.root / file).exists():
                    raise SpecError(
                        f"{self.path('data')}: domains.{domain}.files.{split} = {file!r}: no such file "
                        f"or directory under {self.root}; point it at a JSONL file or a saved "
                        f"`datasets` directory, or remove the key to generate this split"
                    )
            if d.verifier is not None:
                self._check_verifier(domain, d.verifier)
        return spec

    def _check_verifier(self, domain: str, file: str) -> None:
        """A user domain's verifier: a Python file under data/ with a top-level `verify` function
        (read, not imported: `bar validate` runs no code of yours)."""
        where = f"{self.path('data')}: domains.{domain}.verifier = {file!r}"
        if domain in DOMAINS:
            raise SpecError(f"{where}: {domain!r} is built in and has its own verifier; remove the key")
        if not inside(file, "data") or not file.endswith(".py"):
            raise SpecError(
                f"{where}: a verifier is a Python file under data/ (a dependency of prepare_data); write data/<name>.py"
            )
        path = self.root / file
        if not path.is_file():
            raise SpecError(
                f"{where}: no such file under {self.root}; create it with "
                f"`def verify(response: str, check: dict) -> bool`, or remove the key for exact match"
            )
        try:
            tree = ast.parse(path.read_text(), filename=file)
        except SyntaxError as e:
            raise SpecError(f"{where}: {file}:{e.lineno}: syntax error: {e.msg}") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "verify" for n in tree.body):
            raise SpecError(
                f"{where}: {file} defines no top-level function `verify`; add "
                f"`def verify(response: str, check: dict) -> bool`"
            )

    @property
    def train(self) -> TrainStagesSpec:
        spec = self._load("train")
        for section in ("pretrain", "anchor"):
            check_parallel(self.model, getattr(spec, section).tp_size, f"{self.path('train')}: {section}.tp_size")
        return spec

    @property
    def eval(self) -> EvalSpec:
        return self._load("eval")

    @property
    def promotion(self) -> PromotionSpec:
        return self._load("promotion")

    @property
    def merge(self) -> MergeSpec:
        spec = self._load("merge")
        unknown = sorted(set(spec.weights) - set(self.params.experts))
        if unknown:
            raise SpecError(
                f"{self.path('merge')}: weights names experts not in params.yaml "
                f"experts: {unknown}; known: {self.params.experts}"
            )
        return spec

    @property
    def router(self) -> RouterSpec:
        spec = self._load("router")
        check_parallel(self.model, spec.tp_size, f"{self.path('router')}: tp_size", moe=True)
        if spec.topk is not None and spec.topk > len(self.params.experts) + 1:
            raise SpecError(
                f"{self.path('router')}: topk = {spec.topk}: the merged model has "
                f"{len(self.params.experts) + 1} experts (anchor + params.yaml experts)"
            )
        return spec

    @property
    def baselines(self) -> BaselinesSpec:
        spec = self._load("baselines")
        unknown = [e for e in spec.sequential_order if e not in self.params.experts]
        if unknown:
            raise SpecError(
                f"{self.path('baselines')}: sequential_order names experts not in params.yaml "
                f"experts: {unknown}; known: {self.params.experts}"
            )
        return spec

    def baseline(self, name: str) -> str:
        """The kind of baseline `name` is: monolithic, sequential or ablation (an expert spec
        that params.yaml does not merge, trained like an expert)."""
        where = self.root / "params.yaml"
        if name not in self.params.baselines:
            raise SpecError(
                f"{where}: baselines = {self.params.baselines}: no baseline {name!r} (add it to params.yaml baselines)"
            )
        if name in BASELINE_KINDS:
            return name
        if name in self.params.experts:
            raise SpecError(
                f"{where}: baselines: {name!r} is an expert of the pipeline; an ablation is an "
                f"expert spec that params.yaml experts does not list (e.g. math_ffn_only)"
            )
        if not self.path(f"experts/{name}").exists():
            raise SpecError(
                f"{where}: baselines: {name!r} is neither {' nor '.join(BASELINE_KINDS)} nor an "
                f"expert spec: add specs/experts/{name}.yaml or remove it"
            )
        self.expert(name)
        return "ablation"

    def expert(self, name: str) -> ExpertSpec:
        """specs/experts/<name>.yaml with the preset's `experts` section merged over it.

        The preset's stage overrides apply to the stages the expert has (a preset that
        shortens RLVR does not give the SFT-only experts an RLVR stage).
        """
        key = f"experts/{name}"
        if key not in self._cache:
            path = self.path(key)
            if not path.exists():
                known = sorted(p.stem for p in path.parent.glob("*.yaml"))
                raise SpecError(
                    f"{path}: no spec for expert {name!r}; known experts: {', '.join(known)} "
                    f"(add specs/experts/{name}.yaml or fix params.yaml: experts)"
                )
            self._cache[key] = self._expert_at(path, name)
        return self._cache[key]

    def upgrade(self, name: str, version: int) -> Path:
        """specs/upgrades/<name>.v<version>.yaml: a prepared version of an expert spec (validated),
        applied by copying it over specs/experts/<name>.yaml (what the upgrade flow does)."""
        path = self.path(f"upgrades/{name}.v{version}")
        if not path.exists():
            known = sorted(p.name for p in path.parent.glob(f"{name}.v*.yaml"))
            raise SpecError(
                f"{path}: no version {version} of expert {name!r} prepared; "
                f"prepared: {', '.join(known) or 'none'} (write specs/upgrades/{name}.v{version}.yaml)"
            )
        spec = self._expert_at(path, name)
        if spec.version != version:
            raise SpecError(f"{path}: version = {spec.version}: must be {version}, as in the file name")
        return path

    def _expert_at(self, path: Path, name: str) -> ExpertSpec:
        data = read_yaml(path) or {}
        over = dict(self._preset()["experts"] or {})
        if isinstance(data, dict) and isinstance(over.get("stages"), dict):
            mine = data.get("stages") or {}
            over["stages"] = {k: v for k, v in over["stages"].items() if k in mine}
        spec = validate(ExpertSpec, _merge(data, over), path, self.preset_path, over, prefix=("experts",))
        if spec.name != name:
            raise SpecError(f"{path}: name = {spec.name!r}: must be {name!r}, as in the file name")
        known = self.data.domains
        for key, domain in [("domain", spec.domain), *((f"mixture.sources.{d}", d) for d in spec.mixture.sources)]:
            if domain not in known:
                raise SpecError(
                    f"{path}: {key} = {domain!r}: not a domain of {self.path('data')} (domains: "
                    f"{', '.join(known)}); add it there or use one of those"
                )
        check_parallel(self.model, spec.tp_size, f"{path}: tp_size", moe=True)
        return spec

    def validate_all(self) -> None:
        for name in SPEC_FILES:
            getattr(self, name)
        self.train
        for name in self.params.experts:
            self.expert(name)
        for name in self.params.baselines:
            self.baseline(name)
        for path in sorted(self.path("upgrades/x").parent.glob("*.v*.yaml")):
            name, _, version = path.name.removesuffix(".yaml").partition(".v")
            if not version.isdigit():
                raise SpecError(f"{path}: upgrade specs are named <expert>.v<version>.yaml")
            self.upgrade(name, int(version))


def check_parallel(model: ModelSpec, tp_size: int, where: str, moe: bool = False) -> None:
    """Tensor parallelism splits heads, key/value groups, FFN and vocabulary over tp_size ranks."""
    if moe and tp_size > 1:
        # Megatron-Core's MoE layers need sequence parallelism under TP, which our training
        # loop and KV-cache rollouts do not support yet.
        raise SpecError(
            f"{where} = {tp_size}: MoE stages (experts, router) run with tp_size 1 for now; "
            f"set tp_size: 1 (dense stages support tp_size > 1)"
        )
    sizes = {
        "num_attention_heads": model.num_attention_heads,
        "num_query_groups": model.num_query_groups,
        "ffn_hidden_size": model.ffn_hidden_size,
        "vocab_size": model.vocab_size,
    }
    bad = [f"{k}={v}" for k, v in sizes.items() if v % tp_size]
    if bad:
        ok = [t for t in range(1, 9) if all(v % t == 0 for v in sizes.values())]
        raise SpecError(f"{where} = {tp_size}: must divide model {', '.join(bad)}; allowed tp_size: {ok}")


def spec_hash(spec: Spec | dict) -> str:
    """A short content hash of a resolved spec (the lineage tag `spec_hash`)."""
    data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

"""The spec models: what each YAML file may hold, pure pydantic (no loading, no files).

Every model forbids unknown keys and is frozen; a field's bounds and one-line description live
on the field. `bar.specs.loading` reads the files into these.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DOMAINS = ("general", "math", "code", "tool_use", "safety")  # built in: a generator and a verifier each
Domain = Literal["general", "math", "code", "tool_use", "safety"]
# Any domain of specs/data.yaml: a built-in one, or one of the user's (its splits from files).
DomainName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def spec_hash(spec: Spec | dict) -> str:
    """A short content hash of a resolved spec (the lineage tag `spec_hash`)."""
    data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# --- specs/model.yaml -------------------------------------------------------------------


class ModelSpec(Spec):
    """The dense architecture every model of the pipeline shares (experts add FFN slots)."""

    base: str | None = Field(
        None,
        description="a local transformers Llama, Mistral, OLMo 2, Olmo 3 or Qwen3 directory under data/base/ that "
        "pretrain_base imports instead of pre-training (its config.json sets the architecture)",
    )
    anchor: str | None = Field(
        None,
        description="a post-trained model of yours under data/anchor/ (the base's architecture and tokenizer) "
        "that train_anchor imports and scores instead of training; needs `base`",
    )
    family: Literal["llama", "olmo2", "qwen3"] = Field(
        "llama",
        description="where the norms go: llama (and Mistral): RMSNorm before the "
        "attention and the MLP; qwen3: also over each query and key head; olmo2: after the attention and "
        "the MLP, and over the whole query and key projections (and Olmo 3)",
    )
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_query_groups: int = Field(gt=0, description="key/value heads (grouped-query attention)")
    kv_channels: int | None = Field(
        None, gt=0, description="width of each head if not hidden_size / num_attention_heads (Qwen3's head_dim)"
    )
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
    sliding_window: int | None = Field(
        None, gt=0, description="tokens a query of a sliding-window layer sees, itself included (Mistral, Olmo 3)"
    )
    layer_types: list[Literal["full_attention", "sliding_attention"]] | None = Field(
        None, description="each layer's attention, as transformers names it (Olmo 3); none: every layer slides"
    )
    init_std: float = Field(0.02, gt=0)
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description=(
            "what every stage trains, stores and decodes in; bf16: bf16 weights and activations, fp32 main "
            "weights, optimizer state, gradient accumulation, router logits and loss; auto: bf16 where the "
            "device computes it natively, else fp32 (a loaded spec holds the one chosen)"
        ),
    )
    recompute: bool = Field(
        False,
        description="keep only each layer's input for the backward pass and recompute the rest there "
        "(Megatron-Core's full activation recomputation): less memory, one more forward pass of compute",
    )

    @field_validator("precision")
    @classmethod
    def _resolve(cls, precision: str) -> str:
        if precision != "auto":
            return precision
        from bar.specs.device import bf16_native

        return "bf16" if bf16_native() else "fp32"

    @model_validator(mode="after")
    def _heads(self) -> ModelSpec:
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size}"
            )
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"num_query_groups={self.num_query_groups} must divide num_attention_heads={self.num_attention_heads}"
            )
        if self.layer_types is not None and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for num_layers={self.num_layers}")
        if self.layer_types and "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise ValueError("layer_types has sliding_attention layers: set sliding_window")
        # What exports can say: Mistral (llama) slides in every layer, Olmo 3 (olmo2) per layer_types.
        if self.sliding_window is not None and self.family == "qwen3":
            raise ValueError(
                "sliding_window: the qwen3 family has none in bar (llama slides as Mistral, olmo2 as Olmo 3)"
            )
        if self.family == "llama" and self.layer_types and set(self.layer_types) != {"sliding_attention"}:
            raise ValueError("layer_types: the llama family slides in every layer (Mistral) or none; leave it out")
        return self

    def window(self, layer: int) -> int | None:
        """The sliding window of layer `layer` (0-based); None: full attention."""
        if self.layer_types is None or self.layer_types[layer] == "sliding_attention":
            return self.sliding_window
        return None

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16}[self.precision]


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
    skip_bad_rows: bool = Field(
        False, description="leave out bad rows with a warning (a training conversation longer than a row too)"
    )
    train_turns: Literal["all", "last"] = Field(
        "all", description="which assistant turns of a conversation in files.sft/anchor the SFT loss covers"
    )
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


class LoopSpec(Spec):
    """What every training loop takes: how long, which optimiser, how often it checkpoints."""

    steps: int = Field(gt=0)
    optim: OptimSpec
    checkpoint_every: int = Field(50, gt=0, description="steps between resumable checkpoints")


MICRO_BATCH = "rows of a forward/backward pass; a step accumulates its batch in these (null = all at once)"
LR_SCALE = "learning-rate multiplier of a trainable group (1 if not listed)"


def check_split(batch_size: int, micro_batch_size: int | None, dp_size: int = 1) -> None:
    """A step's batch splits evenly over the data-parallel replicas, and each share into micro-batches."""
    if batch_size % dp_size:
        raise ValueError(f"batch_size = {batch_size} must be a multiple of dp_size = {dp_size}")
    if micro_batch_size and (batch_size // dp_size) % micro_batch_size:
        raise ValueError(
            f"micro_batch_size = {micro_batch_size} must divide the rows of each replica, "
            f"batch_size / dp_size = {batch_size // dp_size}"
        )


class TrainSpec(LoopSpec):
    """A dense training stage (pretrain_base, train_anchor): a loop, its batch, how parallel."""

    batch_size: int = Field(gt=0, description="sequences of model.seq_length tokens per step")
    micro_batch_size: int | None = Field(None, gt=0, description=MICRO_BATCH)
    tp_size: int = Field(1, gt=0, description="tensor-parallel processes (torchrun --nproc-per-node)")
    dp_size: int = Field(1, gt=0, description="data-parallel replicas: tp_size x dp_size processes in all")

    @model_validator(mode="after")
    def _split(self) -> TrainSpec:
        check_split(self.batch_size, self.micro_batch_size, self.dp_size)
        return self


class TrainStagesSpec(Spec):
    pretrain: TrainSpec
    anchor: TrainSpec


# --- parameter groups (expert phases train them; the merge combines the shared ones) -------

# Parameter groups that can train. `anchor_ffn` is the anchor's FFN (expert slot 0): frozen in the
# published recipe, trainable for the ablation that trains it (the merge then combines it as it
# combines the shared tensors).
Group = Literal["domain_ffn", "router", "embeddings", "lm_head", "attention", "norms", "anchor_ffn"]
SharedGroup = Literal["embeddings", "lm_head", "attention", "norms", "anchor_ffn"]  # what the merge combines
GROUPS: tuple[str, ...] = Group.__args__


def check_groups(trainable: list[str], lr_scale: dict[str, float]) -> None:
    """Each group trains once, and only a group that trains has a learning-rate multiplier (> 0)."""
    if len(set(trainable)) != len(trainable):
        raise ValueError(f"trainable lists a group twice: {trainable}")
    idle = sorted(set(lr_scale) - set(trainable))
    if idle:
        raise ValueError(f"lr_scale names groups that do not train here: {idle}; trainable: {trainable}")
    if any(v <= 0 for v in lr_scale.values()):
        raise ValueError(f"lr_scale values must be > 0, got {lr_scale}")


# --- specs/merge.yaml and specs/router.yaml ---------------------------------------------


# What fit_router may train: the router and the shared tensors, never an FFN (each is one expert's).
RouterGroup = Literal["router", "embeddings", "lm_head", "attention", "norms"]
MergeStrategy = Literal["mean", "weighted_mean", "base_plus_mean_delta", "disjoint_mean", "ties"]


class MergeSpec(Spec):
    """How the experts' shared tensors (embeddings, attention, norms, LM head) are combined."""

    strategy: MergeStrategy = Field(description="no default: specs/merge.yaml says which, and why")
    by_group: dict[SharedGroup, MergeStrategy] = Field(
        default_factory=dict, description="a strategy of its own for a group of shared tensors"
    )
    weights: dict[str, float] = Field(default_factory=dict, description="expert -> weight (weighted_mean)")
    delta_scale: float = Field(1.0, gt=0, description="base_plus_mean_delta: anchor + scale * mean delta")
    density: float = Field(0.2, gt=0, le=1, description="ties: share of each expert's change kept, per tensor")

    @model_validator(mode="after")
    def _weights(self) -> MergeSpec:
        if "weighted_mean" in (self.strategy, *self.by_group.values()) and not self.weights:
            raise ValueError("strategy weighted_mean needs weights: {expert: weight, ...}")
        if any(w <= 0 for w in self.weights.values()):
            raise ValueError(f"weights must be > 0, got {self.weights}")
        return self


class RouterSpec(LoopSpec):
    """Router fitting on a stratified sample of the experts' SFT data: the router trains (the
    published recipe: only it), optionally with shared tensors, never an expert's FFN."""

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
    batch_size: int = Field(gt=0)
    micro_batch_size: int | None = Field(None, gt=0, description=MICRO_BATCH)
    tp_size: int = Field(1, gt=0, description="tensor-parallel processes (the sequence splits over them too)")
    dp_size: int = Field(1, gt=0, description="data-parallel replicas: tp_size x dp_size processes in all")
    trainable: list[RouterGroup] = Field(
        ["router"], description="groups that train: the router, and shared tensors the merge combined"
    )
    lr_scale: dict[RouterGroup, float] = Field(default_factory=dict, description=LR_SCALE)

    @model_validator(mode="after")
    def _split(self) -> RouterSpec:
        check_split(self.batch_size, self.micro_batch_size, self.dp_size)
        if "router" not in self.trainable:
            raise ValueError(f"trainable must list router (it is what this stage fits): {self.trainable}")
        check_groups(self.trainable, self.lr_scale)
        return self


# --- specs/eval.yaml --------------------------------------------------------------------


class HarnessSpec(Spec):
    """lm-evaluation-harness tasks `evaluate` runs on every exported model (needs `pip install -e '.[eval]'`)."""

    tasks: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]] = Field(
        default_factory=list, description="lm-eval task or group names; bar_<domain>: a held-out split of bar's"
    )
    include: list[Annotated[str, Field(pattern=r"^data/harness/[\w\-][\w.\-]*(/[\w\-][\w.\-]*)*/?$")]] = Field(
        default_factory=list,
        description="task folders of your own (lm-eval's --include_path), under data/harness/ so DVC sees them change",
    )


class EvalSpec(Spec):
    """How held-out prompts are answered (greedy) and scored."""

    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(32, gt=0, description="prompts decoded together")
    num_examples: int | None = Field(None, gt=0, description="first N of each eval split; null = all")
    harness: HarnessSpec = Field(default_factory=HarnessSpec)


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
    max_parallel: int = Field(
        1,
        ge=1,
        description="stages the bar-pipeline flow runs at once when their inputs are ready (the experts); "
        "each gets the machine's cores / max_parallel",
    )


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
    tp_size: int = Field(1, gt=0, description="tensor-parallel processes of every baseline")
    dp_size: int = Field(1, gt=0, description="data-parallel replicas of every baseline: tp_size x dp_size processes")


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

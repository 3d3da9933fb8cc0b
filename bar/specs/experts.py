"""The expert spec models (`specs/experts/<name>.yaml`, `specs/upgrades/`): its mixture and the
phases it trains through. Pure pydantic, as `bar.specs.declarations`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bar.specs.declarations import (
    GROUPS,
    LR_SCALE,
    MICRO_BATCH,
    DomainName,
    Group,
    LoopSpec,
    Spec,
    check_groups,
    check_split,
)

PHASES = ("midtrain", "sft", "rlvr")  # an expert's phases, in the order they run


def split_of(phase: str) -> str:
    """The mixture split a phase trains on (its `mixture.sizes` key and `<split>.jsonl`): RLVR's prompts are `rl`."""
    return "rl" if phase == "rlvr" else phase


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


class PhaseSpec(LoopSpec):
    """One phase of an expert: a loop over the parameter groups that train in it."""

    trainable: list[Group] = Field(min_length=1, description=f"parameter groups that train: {GROUPS}")
    lr_scale: dict[Group, float] = Field(default_factory=dict, description=LR_SCALE)

    @model_validator(mode="after")
    def _unique(self) -> PhaseSpec:
        check_groups(self.trainable, self.lr_scale)
        return self


class LMPhaseSpec(PhaseSpec):
    """midtrain (language modelling on domain text) or sft (assistant-token loss)."""

    batch_size: int = Field(gt=0, description="packed sequences of model.seq_length tokens per step")
    micro_batch_size: int | None = Field(None, gt=0, description=MICRO_BATCH)

    @model_validator(mode="after")
    def _split(self) -> LMPhaseSpec:
        check_split(self.batch_size, self.micro_batch_size)
        return self


class RLVRSpec(PhaseSpec):
    """GRPO with the domain's verifier as the reward."""

    prompts_per_step: int = Field(8, gt=0)
    group_size: int = Field(8, gt=1, description="completions sampled per prompt")
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    clip_eps: float = Field(0.2, gt=0, description="PPO ratio clipping")
    kl_coef: float = Field(0.0, ge=0, description="KL penalty to the policy at the start of RLVR")
    updates_per_step: int = Field(1, gt=0, description="optimiser steps per rollout batch")
    micro_batch_size: int | None = Field(
        None, gt=0, description="completions rolled out and scored per forward pass (null = a replica's all at once)"
    )


class ExpertPhasesSpec(Spec):
    midtrain: LMPhaseSpec | None = None
    sft: LMPhaseSpec | None = None
    rlvr: RLVRSpec | None = None

    def enabled(self) -> list[str]:
        return [name for name in PHASES if getattr(self, name) is not None]

    def check_layout(self, dp_size: int) -> None:
        """Each phase's batch splits evenly over `dp_size` replicas, and each share into its micro-batches."""
        for phase in ("midtrain", "sft"):
            if spec := getattr(self, phase):
                try:
                    check_split(spec.batch_size, spec.micro_batch_size, dp_size)
                except ValueError as e:
                    raise ValueError(f"phases.{phase}: {e}") from None
        if rl := self.rlvr:
            if rl.prompts_per_step % dp_size:
                raise ValueError(
                    f"phases.rlvr.prompts_per_step = {rl.prompts_per_step} must be a multiple of dp_size = "
                    f"{dp_size} (each replica rolls out whole groups)"
                )
            rows = rl.prompts_per_step // dp_size * rl.group_size
            if rl.micro_batch_size and rows % rl.micro_batch_size:
                raise ValueError(
                    f"phases.rlvr.micro_batch_size = {rl.micro_batch_size} must divide the completions of each "
                    f"replica, prompts_per_step / dp_size x group_size = {rows}"
                )


class ExpertSpec(Spec):
    """One domain expert: its data mixture and its phases (branched from the anchor)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    version: int = Field(ge=1)
    domain: DomainName = Field(description="the domain it is scored on; its verifier is the RL reward")
    description: str = ""
    tp_size: int = Field(1, gt=0, description="tensor-parallel processes (the sequence splits over them too)")
    dp_size: int = Field(1, gt=0, description="data-parallel replicas: tp_size x dp_size processes in all")
    mixture: MixtureSpec
    phases: ExpertPhasesSpec

    @model_validator(mode="after")
    def _consistent(self) -> ExpertSpec:
        enabled = self.phases.enabled()
        if not enabled:
            raise ValueError(f"phases must enable at least one of {PHASES}")
        for phase in enabled:
            split = split_of(phase)
            if not self.mixture.sizes.get(split):
                raise ValueError(f"phase {phase} is enabled but mixture.sizes.{split} is not > 0")
        self.phases.check_layout(self.dp_size)
        return self

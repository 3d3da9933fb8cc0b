"""The YAML specs, validated at the boundary.

`specs/*.yaml` are hand-written; `params.yaml` is the pipeline index DVC reads. The package
holds what each file may contain (`declarations`, the expert specs in `experts`: pydantic
models), how the files are read, overlaid by a preset and validated (`loading`), the checks
across files (`checks`) and the import of a user's transformers base model's architecture
(`base_model`). It imports nothing heavier than pydantic and yaml.
"""

from bar.specs.base_model import LLAMA3_ROPE, base_architecture
from bar.specs.declarations import (
    BASELINE_KINDS,
    DOMAINS,
    GROUPS,
    PRESET_SECTIONS,
    SPEC_FILES,
    SPLIT_NAMES,
    BaselinesSpec,
    DataSpec,
    Domain,
    DomainDataSpec,
    DomainName,
    EvalSpec,
    Group,
    HarnessSpec,
    LoopSpec,
    MergeSpec,
    ModelSpec,
    OptimSpec,
    ParamsSpec,
    PromotionSpec,
    RouterSpec,
    Spec,
    TokenizerSpec,
    TrainSpec,
    TrainStagesSpec,
    spec_hash,
)
from bar.specs.errors import InputError, SpecError
from bar.specs.experts import (
    PHASES,
    ExpertPhasesSpec,
    ExpertSpec,
    LMPhaseSpec,
    MixtureSpec,
    PhaseSpec,
    RLVRSpec,
    split_of,
)
from bar.specs.loading import Specs

__all__ = [
    "BASELINE_KINDS",
    "DOMAINS",
    "GROUPS",
    "PHASES",
    "PRESET_SECTIONS",
    "SPEC_FILES",
    "SPLIT_NAMES",
    "BaselinesSpec",
    "DataSpec",
    "Domain",
    "DomainDataSpec",
    "DomainName",
    "EvalSpec",
    "HarnessSpec",
    "ExpertPhasesSpec",
    "ExpertSpec",
    "Group",
    "InputError",
    "LLAMA3_ROPE",
    "LMPhaseSpec",
    "LoopSpec",
    "MergeSpec",
    "MixtureSpec",
    "ModelSpec",
    "OptimSpec",
    "ParamsSpec",
    "PhaseSpec",
    "PromotionSpec",
    "RLVRSpec",
    "RouterSpec",
    "Spec",
    "SpecError",
    "Specs",
    "TokenizerSpec",
    "TrainSpec",
    "TrainStagesSpec",
    "base_architecture",
    "spec_hash",
    "split_of",
]

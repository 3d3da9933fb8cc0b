"""Checks across spec files (and against the files they name), run once per spec when it is loaded.

Each takes the `Specs` being loaded and the validated spec, and raises `SpecError` naming the
file, key, value and fix.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bar.specs.declarations import (
    BASELINE_KINDS,
    DOMAINS,
    SPLIT_NAMES,
    BaselinesSpec,
    DataSpec,
    MergeSpec,
    ModelSpec,
    RouterSpec,
    TrainStagesSpec,
)
from bar.specs.errors import SpecError
from bar.specs.experts import ExpertSpec

if TYPE_CHECKING:
    from bar.specs.loading import Specs


def inside(path: str, *folder: str) -> bool:
    """`path` is relative and names something inside `folder` (parts of a repository path)."""
    parts = Path(os.path.normpath(path)).parts
    return not Path(path).is_absolute() and parts[: len(folder)] == folder and len(parts) > len(folder)


def check_parallel(model: ModelSpec, tp_size: int, where: str, moe: bool = False) -> None:
    """Tensor parallelism splits heads, key/value groups, FFN and vocabulary over tp_size ranks,
    and in an MoE the sequence too (Megatron-Core's MoE under tensor parallelism is sequence-parallel)."""
    sizes = {
        "num_attention_heads": model.num_attention_heads,
        "num_query_groups": model.num_query_groups,
        "ffn_hidden_size": model.ffn_hidden_size,
        "vocab_size": model.vocab_size,
        **({"seq_length": model.seq_length} if moe else {}),
    }
    bad = [f"{k}={v}" for k, v in sizes.items() if v % tp_size]
    if bad:
        ok = [t for t in range(1, 9) if all(v % t == 0 for v in sizes.values())]
        raise SpecError(f"{where} = {tp_size}: must divide model {', '.join(bad)}; allowed tp_size: {ok}")


def data(specs: Specs, spec: DataSpec) -> None:
    """Every domain has held-out prompts; a user's domain comes from files under data/ that exist,
    and its verifier is a Python file there defining `verify`."""
    path = specs.path("data")
    for domain, d in spec.domains.items():
        if not d.eval and "eval" not in d.files:
            raise SpecError(f"{path}: domains.{domain}: no held-out prompts: set eval > 0 or files.eval")
        if domain not in DOMAINS and (counted := [s for s in SPLIT_NAMES if getattr(d, s) and s not in d.files]):
            raise SpecError(
                f"{path}: domains.{domain}.{counted[0]} = {getattr(d, counted[0])}: "
                f"{domain!r} is a domain of yours (built in: {', '.join(DOMAINS)}) and nothing "
                f"generates it: give files.{counted[0]}: data/<file> instead of a count"
            )
        for split, file in d.files.items():
            # User data: paths relative to the repository, under data/, which dvc.yaml lists as a
            # dependency of prepare_data (so that DVC re-runs it when the data changes).
            if not inside(file, "data"):
                raise SpecError(
                    f"{path}: domains.{domain}.files.{split} = {file!r}: user data "
                    f"must be under data/ in the repository (DVC re-runs prepare_data when "
                    f"something there changes, and only there); copy or `dvc add` it there "
                    f"and write data/<name>"
                )
            if not (specs.root / file).exists():
                raise SpecError(
                    f"{path}: domains.{domain}.files.{split} = {file!r}: no such file "
                    f"or directory under {specs.root}; point it at a JSONL file or a saved "
                    f"`datasets` directory, or remove the key to generate this split"
                )
        if d.verifier is not None:
            verifier(specs, domain, d.verifier)


def verifier(specs: Specs, domain: str, file: str) -> None:
    """A user domain's verifier: a Python file under data/ with a top-level `verify` function
    (read, not imported: `bar validate` runs no code of yours)."""
    where = f"{specs.path('data')}: domains.{domain}.verifier = {file!r}"
    if domain in DOMAINS:
        raise SpecError(f"{where}: {domain!r} is built in and has its own verifier; remove the key")
    if not inside(file, "data") or not file.endswith(".py"):
        raise SpecError(
            f"{where}: a verifier is a Python file under data/ (a dependency of prepare_data); write data/<name>.py"
        )
    path = specs.root / file
    if not path.is_file():
        raise SpecError(
            f"{where}: no such file under {specs.root}; create it with "
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


def train(specs: Specs, spec: TrainStagesSpec) -> None:
    for section in ("pretrain", "anchor"):
        check_parallel(specs.model, getattr(spec, section).tp_size, f"{specs.path('train')}: {section}.tp_size")


def merge(specs: Specs, spec: MergeSpec) -> None:
    unknown = sorted(set(spec.weights) - set(specs.params.experts))
    if unknown:
        raise SpecError(
            f"{specs.path('merge')}: weights names experts not in params.yaml "
            f"experts: {unknown}; known: {specs.params.experts}"
        )


def router(specs: Specs, spec: RouterSpec) -> None:
    check_parallel(specs.model, spec.tp_size, f"{specs.path('router')}: tp_size", moe=True)
    if spec.topk is not None and spec.topk > len(specs.params.experts) + 1:
        raise SpecError(
            f"{specs.path('router')}: topk = {spec.topk}: the merged model has "
            f"{len(specs.params.experts) + 1} experts (anchor + params.yaml experts)"
        )


def baselines(specs: Specs, spec: BaselinesSpec) -> None:
    path = specs.path("baselines")
    unknown = [e for e in spec.sequential_order if e not in specs.params.experts]
    if unknown:
        raise SpecError(
            f"{path}: sequential_order names experts not in params.yaml experts: {unknown}; known: {specs.params.experts}"
        )
    # Every baseline runs at this layout; the dense ones replay the experts' phases, an ablation is an MoE.
    check_parallel(specs.model, spec.tp_size, f"{path}: tp_size", moe=True)
    ablations = [b for b in specs.params.baselines if baseline_kind(specs, b) == "ablation"]
    for name in dict.fromkeys([*specs.params.experts, *ablations]):
        phases = specs.expert(name).phases
        try:
            phases.check_layout(spec.dp_size)
        except ValueError as e:
            raise SpecError(f"{path}: dp_size = {spec.dp_size}: {specs.path(f'experts/{name}')}: {e}") from None


# The checks of each spec file that has some (its name in SPEC_FILES -> check).
SPEC_CHECKS = {"data": data, "train": train, "merge": merge, "router": router, "baselines": baselines}


def expert(specs: Specs, spec: ExpertSpec, path: Path, name: str) -> None:
    """An expert spec against its file name, the domains of specs/data.yaml and the architecture."""
    if spec.name != name:
        raise SpecError(f"{path}: name = {spec.name!r}: must be {name!r}, as in the file name")
    known = specs.data.domains
    for key, domain in [("domain", spec.domain), *((f"mixture.sources.{d}", d) for d in spec.mixture.sources)]:
        if domain not in known:
            raise SpecError(
                f"{path}: {key} = {domain!r}: not a domain of {specs.path('data')} (domains: "
                f"{', '.join(known)}); add it there or use one of those"
            )
    check_parallel(specs.model, spec.tp_size, f"{path}: tp_size", moe=True)


def baseline_kind(specs: Specs, name: str) -> str:
    """The kind of baseline `name` is: monolithic, sequential or ablation (an expert spec that
    params.yaml does not merge, trained like an expert)."""
    where = specs.root / "params.yaml"
    if name not in specs.params.baselines:
        raise SpecError(
            f"{where}: baselines = {specs.params.baselines}: no baseline {name!r} (add it to params.yaml baselines)"
        )
    if name in BASELINE_KINDS:
        return name
    if name in specs.params.experts:
        raise SpecError(
            f"{where}: baselines: {name!r} is an expert of the pipeline; an ablation is an "
            f"expert spec that params.yaml experts does not list (e.g. math_ffn_only)"
        )
    if not specs.path(f"experts/{name}").exists():
        raise SpecError(
            f"{where}: baselines: {name!r} is neither {' nor '.join(BASELINE_KINDS)} nor an "
            f"expert spec: add specs/experts/{name}.yaml or remove it"
        )
    specs.expert(name)
    return "ablation"

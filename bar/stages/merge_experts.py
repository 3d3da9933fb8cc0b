"""Stage merge_experts: the experts of params.yaml into one MoE with N+1 experts per layer.

Writes outputs/merge_experts/ (model.safetensors, config.json recording which expert versions
went in, with their content hashes, and a `transformers` Mixtral export).
"""

from __future__ import annotations

from bar.files import atomic_dir, output, write_json, write_metrics
from bar.specs import Specs, spec_hash
from bar.stages import entry

STAGE = "merge_experts"


def main() -> None:
    import time

    from safetensors.torch import save_file

    from bar import tracking
    from bar.merge import check_compatible, merge
    from bar.model.hf import export
    from bar.specs import ModelSpec
    from bar.tokenizer import load as load_tokenizer
    from bar.train.checkpoint import sha256

    specs = Specs()
    spec, names = specs.merge, specs.params.experts
    resolved = {"merge": spec.model_dump(mode="json"), "experts": names}
    experts = {n: output("train_expert", n) for n in names}
    config = check_compatible(experts)  # incompatible experts fail before any MLflow run
    with tracking.stage_run(
        STAGE,
        spec=resolved,
        tags={
            "spec_hash": spec_hash(resolved),
            "anchor_hash": tracking.dvc_md5("outputs/train_anchor"),
            **{f"expert.{n}": tracking.dvc_md5(f"outputs/train_expert/{n}") for n in names},
        },
    ) as run:
        start = time.time()
        state = merge(experts, spec, output("train_anchor"))
        components = [
            {"name": n, "version": check_version(experts[n]), "sha256": sha256(experts[n] / "model.safetensors")}
            for n in names
        ]
        merged = {
            **{k: config[k] for k in ("arch", "vocab", "anchor_sha256", "tokenizer_sha256")},
            "kind": "moe",
            "num_experts": len(names) + 1,
            "experts": ["anchor", *names],
            "components": components,
            "merge": spec.model_dump(mode="json"),
        }
        with atomic_dir(output(STAGE)) as out:
            save_file(state, out / "model.safetensors")
            write_json(out / "config.json", merged)
            export(
                state,
                ModelSpec(**config["arch"]),
                load_tokenizer(output("tokenizer")),
                out / "hf",
                num_experts=len(names) + 1,
            )
        metrics = {"num_experts": len(names) + 1}
        write_metrics(STAGE, metrics)  # results only: a clock would make dvc.lock differ run to run
        run.log_metrics(metrics | {"merge_seconds": time.time() - start})
        run.log_dict({"components": components}, "components.json")


def check_version(path) -> int:
    import json

    return json.loads((path / "config.json").read_text())["version"]


if __name__ == "__main__":
    entry(main)

"""What DVC recorded, read from its files (dvc.yaml, dvc.lock): the md5 of each stage output and the
data each stage reads. Stages use it for lineage tags and MLflow inputs only, never for their outputs."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_dvc_file(path: Path) -> dict:
    """A DVC file (dvc.yaml, dvc.lock) as data; libyaml's loader when present (dvc.lock runs to
    thousands of lines and a stage reads it several times)."""
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def _lock_outs(cwd: Path | str) -> dict[str, str]:
    """{output path: md5} of every stage output DVC recorded in dvc.lock."""
    lock = Path(cwd) / "dvc.lock"
    if not lock.exists():
        return {}
    return {
        out["path"]: out.get("md5", "unknown")
        for stage in read_dvc_file(lock).get("stages", {}).values()
        for out in stage.get("outs", [])
        if "path" in out
    }


def _md5_of(path: str, outs: dict[str, str]) -> str:
    return next((md5 for out, md5 in outs.items() if path == out or path.startswith(out + "/")), "unknown")


def dvc_md5(path: str, cwd: Path | str = ".") -> str:
    """The md5 DVC recorded in dvc.lock for the output holding `path` (the output itself or a
    folder containing it): how DVC versions that data."""
    return _md5_of(path, _lock_outs(cwd))


PIPELINES = ("dvc.yaml", "baselines/dvc.yaml")  # the main pipeline and the opt-in baselines


def stage_inputs(stage: str, cwd: Path | str = ".") -> dict[str, str]:
    """The data a DVC stage reads (its `outputs/...` deps in dvc.yaml) and DVC's md5 of each; a
    folder dep holding several stages' outputs stands for each of them."""
    base, _, item = stage.partition("@")
    definition = {}
    for name in PIPELINES:
        path = Path(cwd) / name
        if path.exists():
            definition = definition or read_dvc_file(path).get("stages", {}).get(base, {})
    deps = definition.get("do", definition).get("deps", [])
    deps = [d.replace("${item}", item) for d in deps if isinstance(d, str) and d.startswith("outputs/")]
    outs, inputs = _lock_outs(cwd), {}
    for d in deps:
        inside = {out: md5 for out, md5 in outs.items() if out.startswith(d + "/")}
        inputs |= inside or {d: _md5_of(d, outs)}
    return inputs

"""Property: any mutation of a valid spec either still validates or fails with one SpecError line
that names the file and the key; nothing else escapes (no raw pydantic, Key or Type errors).
A negative number, and any value outside a bound the spec models declare, is refused."""

import json
import shutil
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bar.specs import SPEC_FILES, ExpertSpec, ParamsSpec, SpecError, Specs
from conftest import ROOT, set_params

FILES = [
    "model",
    "tokenizer",
    "data",
    "train",
    "eval",
    "merge",
    "router",
    "promotion",
    "baselines",
    "experts/math",
    "experts/code",
    "experts/tool_use",
    "experts/safety",
]


def leaves(data, prefix=()):
    """Key paths (through dicts only) of a YAML document."""
    for key, value in data.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from leaves(value, prefix + (key,))


def get(data, path):
    for key in path:
        data = data[key]
    return data


@st.composite
def mutations(draw):
    name = draw(st.sampled_from(FILES))
    data = yaml.safe_load((ROOT / "specs" / f"{name}.yaml").read_text())
    path = draw(st.sampled_from(sorted(leaves(data), key=str)))
    value = get(data, path)
    kind = draw(st.sampled_from(["unknown_key", "wrong_type", "negative", "tp_size", "missing_file"]))
    if kind == "tp_size":  # any tensor-parallel size that does not divide the heads (4) and groups (2)
        name = draw(st.sampled_from(["train", "router", "experts/math", "experts/code"]))
        data = yaml.safe_load((ROOT / "specs" / f"{name}.yaml").read_text())
        path = draw(st.sampled_from([p for p in leaves(data) if p[-1] == "tp_size"]))
        return name, path, kind, draw(st.sampled_from([3, 5, 6, 7, 8, 16]))
    if kind == "missing_file":
        domain = draw(st.sampled_from(["general", "math", "code", "tool_use", "safety"]))
        split = draw(st.sampled_from(["sft", "eval"]))
        return "data", ("domains", domain, "files", split), kind, f"data/{domain}_{split}_missing.jsonl"
    if kind == "unknown_key":
        path = path[:-1] + (path[-1] + "_typo",)
        new = value
    elif kind == "wrong_type":
        new = {"x": 1} if isinstance(value, (str, int, float, list)) or value is None else "oops"
    else:
        new = (
            -draw(st.integers(1, 10**6))
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else draw(st.sampled_from([-1, "", []]))
        )
    return name, path, kind, new


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_a_mutated_spec_fails_with_one_line_naming_file_and_key(mutation):
    name, path, kind, new = mutation
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "specs", root / "specs")
        shutil.copy(ROOT / "params.yaml", root)
        set_params(root, preset="default")
        file = root / "specs" / f"{name}.yaml"
        data = yaml.safe_load(file.read_text())
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = new
        file.write_text(yaml.safe_dump(data))
        try:
            Specs(root).validate_all()
        except SpecError as e:
            msg = str(e)
            assert "\n" not in msg
            assert msg.startswith(str(root / "specs")), msg
            assert f"{name}.yaml" in msg or "upgrades/" in msg, msg
            if kind == "unknown_key":  # under domains or mixture.sources: a domain of the user's
                assert ".".join(path) in msg and ("unknown key" in msg or "domain" in msg), msg
            if kind in ("tp_size", "missing_file"):
                assert ".".join(path) in msg and str(new) in msg, msg
            if kind == "negative" and isinstance(new, (int, float)):  # the key, or the mapping a check of it names
                assert path[-1] in msg or len(path) > 1 and path[-2] in msg, msg
        else:
            # Every number of the specs is a count, a size, a rate or a coefficient: none may be negative.
            assert (
                kind == "negative"
                and not isinstance(new, (int, float))
                or kind == "wrong_type"
                and isinstance(new, str)
            ), f"{name}.yaml: {'.'.join(path)} = {new!r} ({kind}) was accepted"


def bounds(model: type[BaseModel], prefix: tuple = ()):
    """(key path, "gt" | "ge" | "lt" | "le", bound, integer?) of every numeric bound `model` declares
    (`Field(gt=...)` and the like), through nested models; "*" stands for any key of a mapping."""
    for name, field in model.model_fields.items():
        integer = int in (field.annotation, *typing.get_args(field.annotation))
        for constraint in field.metadata:
            for kind in ("gt", "ge", "lt", "le"):
                if getattr(constraint, kind, None) is not None:
                    yield prefix + (name,), kind, getattr(constraint, kind), integer
        for sub, key in models_in(field.annotation):
            yield from bounds(sub, prefix + (name, *key))


def models_in(annotation, key: tuple = ()):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, key
    elif typing.get_origin(annotation) is dict:
        yield from models_in(typing.get_args(annotation)[1], key + ("*",))
    else:  # X | None
        for arg in typing.get_args(annotation):
            yield from models_in(arg, key)


def outside(kind: str, bound, integer: bool):
    """The value just outside a bound (0 where > 0 is required, -1 where >= 0 is)."""
    step = 1 if integer else 0.5
    return {"gt": bound, "ge": bound - step, "lt": bound, "le": bound + step}[kind]


def places(data, path: tuple):
    """`path` in a spec's YAML, "*" expanded over its keys, where every mapping above the key exists."""
    if len(path) == 1:
        yield path
        return
    keys = list(data) if path[0] == "*" else [path[0]] if path[0] in data else []
    for key in keys:
        if isinstance(data[key], dict):
            yield from ((key, *rest) for rest in places(data[key], path[1:]))


def spec_file(root: Path, name: str) -> Path:
    return root / "params.yaml" if name == "params" else root / "specs" / f"{name}.yaml"


MODELS = {
    **SPEC_FILES,
    "params": ParamsSpec,
    **{
        f"{p.parent.name}/{p.stem}": ExpertSpec
        for folder in ("experts", "upgrades")
        for p in sorted((ROOT / "specs" / folder).glob("*.yaml"))
    },
}
# Named by hand as well, so that dropping their bound from the model fails a test rather than the case.
REQUIRED = [
    ("train", ("pretrain", "steps"), 0),
    ("train", ("anchor", "steps"), -5),
    ("train", ("pretrain", "batch_size"), 0),
    ("train", ("anchor", "batch_size"), -1),
    ("router", ("steps",), 0),
    ("router", ("batch_size",), -2),
    ("experts/math", ("phases", "sft", "batch_size"), 0),
    ("experts/math", ("phases", "rlvr", "prompts_per_step"), 0),
    ("experts/code", ("phases", "rlvr", "prompts_per_step"), -4),
    ("experts/math", ("phases", "rlvr", "group_size"), 1),
    ("experts/code", ("phases", "rlvr", "group_size"), 0),
]


def out_of_range() -> list[tuple]:
    cases = set(REQUIRED)
    for name, model in MODELS.items():
        data = yaml.safe_load(spec_file(ROOT, name).read_text())
        for path, kind, bound, integer in bounds(model):
            cases |= {(name, place, outside(kind, bound, integer)) for place in places(data, path)}
    return sorted(cases, key=str)


def load(specs: Specs, name: str) -> None:
    """Validate spec file `name` as `bar validate` does (and what it depends on)."""
    folder, _, stem = name.rpartition("/")
    if folder == "experts":
        specs.expert(stem)
    elif folder == "upgrades":
        specs.upgrade(*stem.split(".v"))
    else:
        getattr(specs, name)


def numbers() -> list[tuple]:
    """(spec, key path) of every number written in the specs."""
    found = []
    for name in MODELS:
        data = yaml.safe_load(spec_file(ROOT, name).read_text())
        found += [
            (name, path)
            for path in leaves(data)
            if isinstance(get(data, path), (int, float)) and not isinstance(get(data, path), bool)
        ]
    return found


@pytest.fixture(scope="module")
def default_specs(tmp_path_factory) -> Path:
    """The specs and params.yaml at the default preset, without their comments (parsed faster)."""
    root = tmp_path_factory.mktemp("specs")
    shutil.copytree(ROOT / "specs", root / "specs")
    shutil.copy(ROOT / "params.yaml", root)
    set_params(root, preset="default")
    for file in [root / "params.yaml", *(root / "specs").rglob("*.yaml")]:
        file.write_text(yaml.safe_dump(yaml.safe_load(file.read_text())))
    Specs(root).validate_all()
    return root


def refusal(root: Path, name: str, path: tuple, value) -> str:
    """The SpecError line of spec `name` with `path` set to `value` (the file is restored after)."""
    file = spec_file(root, name)
    text = file.read_text()
    data = yaml.safe_load(text)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    file.write_text(yaml.safe_dump(data))
    try:
        with pytest.raises(SpecError) as refused:
            load(Specs(root), name)
    finally:
        file.write_text(text)
    msg = str(refused.value)
    assert "\n" not in msg and msg.startswith(f"{file}: "), msg
    return msg


def case_id(v) -> str:
    return ".".join(v) if isinstance(v, tuple) else str(v)


@pytest.mark.parametrize("name,path,value", out_of_range(), ids=case_id)
def test_a_value_outside_a_declared_bound_is_refused_naming_file_key_and_value(default_specs, name, path, value):
    msg = refusal(default_specs, name, path, value)
    assert msg.startswith(f"{spec_file(default_specs, name)}: {'.'.join(path)} = {json.dumps(value)}: "), msg


@pytest.mark.parametrize("name,path", numbers(), ids=case_id)
def test_a_negative_number_anywhere_in_the_specs_is_refused(default_specs, name, path):
    """Every number of the specs is a count, a size, a rate or a coefficient. A check across a
    mapping (mixture.sizes, lr_scale) names the mapping rather than the key."""
    msg = refusal(default_specs, name, path, -1)
    where = msg.removeprefix(f"{spec_file(default_specs, name)}: ")
    assert where.startswith(f"{'.'.join(path)} = -1: ") or len(path) > 1 and path[-2] in where, msg


def test_the_bounds_come_from_every_spec_model():
    """The cases above are derived from the models: each spec file's bounds are found."""
    found = {name for name, _, _ in out_of_range()}
    assert found == set(MODELS)
    assert ("experts/math", ("phases", "rlvr", "group_size"), 1) in out_of_range()  # gt=1
    assert ("data", ("domains", "tool_use", "sft"), -1) in out_of_range()  # under a mapping of domains
    assert ("upgrades/code.v2", ("phases", "sft", "optim", "lr"), 0) in out_of_range()


@pytest.mark.slow
def test_a_stage_with_a_bad_spec_fails_before_any_process_group_or_mlflow_run(tmp_path):
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, preset="tiny")
    edit = yaml.safe_load((tmp_path / "specs" / "train.yaml").read_text())
    edit["anchor"]["optim"]["lr"] = "fast"
    (tmp_path / "specs" / "train.yaml").write_text(yaml.safe_dump(edit))
    proc = subprocess.run(
        [sys.executable, "-m", "bar.stages.train_anchor"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f'error: {tmp_path / "specs" / "train.yaml"}: anchor.optim.lr = "fast": Input should be a valid number, '
        "unable to parse string as a number"
    ]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "checkpoints").exists()

"""DVC code deps cannot drift: every module a stage imports (its import closure, lazy imports
inside functions included, and the files those run or copy: RUNS) is covered by one of the
stage's deps in dvc.yaml or baselines/dvc.yaml, or a missing dep fails naming the stage and the
file; and every code dep is something the stage imports, so editing other code re-runs nothing.

One documented exception (LOGGING_ONLY, folders end in "/"): code that records runs, so that a
change to how runs are logged does not retrain models. bar/tracking/ is all of it: its DVC-file
reading (dvc_files.py) feeds lineage tags and MLflow inputs, never an output; its registry queries
feed evaluate's assembly cost from the MLflow store, an input DVC cannot track (bar/tracking/__init__.py).
"""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LOGGING_ONLY = {"bar/tracking/": "MLflow runs, lineage tags and the registry, read from MLflow and DVC's files"}
RUNS = {  # files a module uses without importing them
    "bar/data/sandbox.py": ["bar/data/_sandbox_child.py"],  # the sandboxed process it starts
    "bar/model/hf.py": ["bar/model/modeling_bar.py"],  # copied into an export that chooses experts per sequence
}


def logging_only(rel: str) -> bool:
    return any(rel == k or k.endswith("/") and rel.startswith(k) for k in LOGGING_ONLY)


def module_file(name: str) -> Path | None:
    """bar.x.y -> bar/x/y.py or bar/x/y/__init__.py (None: not a bar module)."""
    parts = name.split(".")
    if parts[0] != "bar":
        return None
    path = ROOT.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(path: Path) -> set[Path]:
    """The bar modules a file imports, anywhere in it, with the packages they live in."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing bar.a.b runs bar/__init__ and bar/a/__init__
                if (f := module_file(".".join(parts[:i]))) is not None:
                    found.add(f)
    return found


def closure(module: str) -> set[str]:
    todo, seen = [module_file(module)], set()
    while todo:
        path = todo.pop()
        rel = str(path.relative_to(ROOT))
        if rel in seen or logging_only(rel):
            continue
        seen.add(rel)
        todo.extend(imported(path))
        todo.extend(ROOT / f for f in RUNS.get(rel, []))
    return seen


def stages() -> list[tuple[str, str, list[str]]]:
    """(dvc file, stage, deps) of every stage whose command runs a bar module."""
    out = []
    for dvcfile in ("dvc.yaml", "baselines/dvc.yaml"):
        for name, stage in yaml.safe_load((ROOT / dvcfile).read_text())["stages"].items():
            body = stage.get("do", stage)
            out.append((dvcfile, name, body["cmd"].split()[2], body["deps"]))
    return out


def missing_deps(module: str, deps: list[str]) -> list[str]:
    covered = [d.rstrip("/") for d in deps]
    return sorted(f for f in closure(module) if not any(f == d or f.startswith(d + "/") for d in covered))


@pytest.mark.parametrize("dvcfile,name,module,deps", stages(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_stage_lists_every_module_it_imports_as_a_dep(dvcfile, name, module, deps):
    missing = missing_deps(module, deps)
    assert not missing, f"{dvcfile}: stage {name} ({module}) imports {', '.join(missing)}: add them to its deps"


def stale_deps(module: str, deps: list[str]) -> list[str]:
    """The code deps (under bar/) that hold no file of the stage's import closure."""
    used = closure(module)
    code = [d.rstrip("/") for d in deps if d.startswith("bar/")]
    return sorted(d for d in code if not any(f == d or f.startswith(d + "/") for f in used))


@pytest.mark.parametrize("dvcfile,name,module,deps", stages(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_stage_lists_no_code_it_does_not_import(dvcfile, name, module, deps):
    stale = stale_deps(module, deps)
    assert not stale, f"{dvcfile}: stage {name} ({module}) does not import {', '.join(stale)}: drop them from its deps"


def test_a_dep_taken_out_and_a_dep_not_imported_are_named():
    dvcfile, name, module, deps = next(s for s in stages() if s[1] == "merge_experts")
    assert "bar/merge.py" in closure(module)
    assert missing_deps(module, [d for d in deps if d != "bar/merge.py"]) == ["bar/merge.py"]
    assert stale_deps(module, [*deps, "bar/train/rlvr.py"]) == ["bar/train/rlvr.py"]


def test_tracking_is_the_only_exception_and_stages_import_it():
    """The exception covers bar/tracking/ (every file of it) and nothing else, and is not vacuous."""
    assert LOGGING_ONLY.keys() == {"bar/tracking/"}
    assert logging_only("bar/tracking/dvc_files.py") and not logging_only("bar/train/__init__.py")
    assert ROOT / "bar" / "tracking" / "__init__.py" in imported(ROOT / "bar" / "stages" / "evaluate.py")
    assert not any(f.startswith("bar/tracking") for f in closure("bar.stages.evaluate"))


def test_the_library_imports_no_stage_and_no_stage_imports_another():
    """The stages are thin scripts over the library: below bar/stages/ nothing imports them, and a
    stage imports only the package's `entry` (bar/stages/__init__.py), never another stage."""
    package = ROOT / "bar" / "stages"
    for path in sorted((ROOT / "bar").rglob("*.py")):
        stages_used = {f for f in imported(path) if f.parent == package}
        rel = path.relative_to(ROOT)
        if path.parent == package:
            assert stages_used <= {package / "__init__.py"}, f"{rel} imports another stage: {stages_used}"
        else:
            assert not stages_used, f"{rel} imports bar.stages: {sorted(map(str, stages_used))}"
    assert package / "__init__.py" in imported(package / "evaluate.py")  # not vacuous


def test_bar_imports_only_by_absolute_name_which_is_what_the_closure_reads():
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "bar").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, f"relative imports, which `imported` does not follow: {relative}"

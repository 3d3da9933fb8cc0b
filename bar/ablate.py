"""Ablations of the routed model: the pipeline re-run with one thing changed, and what the change
costs or gains on each domain.

specs/ablations.yaml names each ablation and the spec values it sets. `bar ablate` runs each in a
workspace of its own, .ablations/<name>/: the project's files as they are now (git's files,
dvc.lock, metrics/) with the ablation's values written into them, sharing the project's DVC
cache, so that `dvc repro` there re-runs only the stages the change reaches (a merge strategy:
the merge, the router and the evaluation) and restores the rest from the cache. Each workspace
records its runs in an MLflow store of its own: the project's registry never holds an ablation.
reports/ablations.md sets the routed scores of each ablation beside the project's, per domain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bar.launch import threads_per_rank
from bar.specs import InputError, SpecError, Specs

ABLATIONS = "specs/ablations.yaml"
WORKSPACES = ".ablations"
REPORT = "reports/ablations.md"
EXPERTS = "experts"  # a target of `set`: every expert of params.yaml, in the phases each has
SERVED = {"routed": "served per sequence", "routed_per_token": "every expert per token"}


class Ablation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(description="what the ablation changes, in a few words")
    set: dict[str, dict] = Field(
        description="spec file (or `experts`: every expert of params.yaml) -> values, merged key by key; "
        "every key must exist in the file"
    )


def load(root: Path) -> dict[str, Ablation]:
    from bar.specs.loading import read_yaml

    raw = read_yaml(root / ABLATIONS) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{ABLATIONS}: expected a mapping of ablation names to {{description, set}}")
    out = {}
    for name, body in raw.items():
        try:
            out[name] = Ablation.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in (name, *err["loc"]))
            raise SpecError(f"{ABLATIONS}: {where}: {err['msg']}") from None
    return out


def _merge(data: dict, values: dict, where: str, path: str = "", skip_phases: bool = False) -> None:
    """`values` written into `data` key by key; a key `data` lacks is a typo (with `skip_phases`,
    a phase the expert does not have is passed over: tool use has no RLVR). An empty mapping in
    `data` (`lr_scale: {}`) takes the value whole."""
    for key, value in values.items():
        here = f"{path}{key}"
        if not isinstance(data, dict) or key not in data:
            if skip_phases and path == "phases.":
                continue
            raise SpecError(f"{where}: no key {here!r} there to set (a typo?); fix {ABLATIONS}")
        if isinstance(value, dict) and isinstance(data[key], dict) and data[key]:
            _merge(data[key], value, where, f"{here}.", skip_phases)
        else:
            data[key] = value


def edits(root: Path, name: str, ablation: Ablation) -> dict[str, dict]:
    """{spec file (relative): its content with the ablation's values}."""
    out: dict[str, dict] = {}
    for target, values in ablation.set.items():
        many = target == EXPERTS
        files = [f"specs/experts/{e}.yaml" for e in Specs(root).params.experts] if many else [target]
        for file in files:
            if not (root / file).is_file():
                raise SpecError(f"{ABLATIONS}: {name}.set: {file}: no such spec file")
            data = out.get(file) or yaml.safe_load((root / file).read_text())
            _merge(data, values, f"{ABLATIONS}: {name}.set.{target}: {file}", skip_phases=many)
            out[file] = data
    return out


def _files(root: Path) -> list[str]:
    """The project's files a workspace starts from: git's (as they are now), dvc.lock, metrics/."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    files = [f for f in listed.decode().split("\0") if f and (root / f).is_file()]
    files += [str(p.relative_to(root)) for p in (root / "metrics").rglob("*") if p.is_file()]
    return sorted({*files, "dvc.lock"})


def check(root: Path, name: str, ablation: Ablation) -> dict[str, dict]:
    """The ablation's spec files, validated as any spec is (in a scratch view of the project:
    its specs and params.yaml copied, everything else linked); SpecError naming what is wrong."""
    written = edits(root, name, ablation)
    with tempfile.TemporaryDirectory() as scratch:
        view = Path(scratch)
        for entry in root.iterdir():
            if entry.name not in ("specs", "params.yaml", WORKSPACES):
                (view / entry.name).symlink_to(entry)
        shutil.copytree(root / "specs", view / "specs")
        shutil.copy2(root / "params.yaml", view / "params.yaml")
        for file, data in written.items():
            (view / file).write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            Specs(view).validate_all()
        except SpecError as e:
            raise SpecError(f"{ABLATIONS}: {name}: {str(e).replace(f'{view}/', '')}") from None
    return written


def prepare(root: Path, name: str, written: dict[str, dict]) -> Path:
    """The workspace of one ablation (replacing an earlier one), its spec files as `check` wrote
    them and its outputs checked out of the project's DVC cache."""
    ws = root / WORKSPACES / name
    if ws.exists():
        shutil.rmtree(ws)
    for file in _files(root):
        (ws / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / file, ws / file)
    for file, data in written.items():
        (ws / file).write_text(yaml.safe_dump(data, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    cache = subprocess.run([*dvc, "cache", "dir"], cwd=root, check=True, capture_output=True, text=True).stdout
    (ws / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache.strip()}\n    type = hardlink,copy\n")
    git = ["git", "-c", "user.name=bar", "-c", "user.email=bar@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", f"ablation {name}"]):
        subprocess.run(git + cmd, cwd=ws, check=True, capture_output=True)
    # The pipeline's outputs only: a baseline of params.yaml not run yet has none to check out.
    subprocess.run([*dvc, "checkout", "-q", "dvc.yaml"], cwd=ws, check=True, capture_output=True)
    return ws


def rerun(root: Path, ws: Path) -> list[str]:
    """The stages whose dvc.lock entry differs between the project and a workspace."""
    mine = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    theirs = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return [s for s in theirs if mine.get(s) != theirs[s]]


def run(root: Path, names: list[str], jobs: int = 1) -> dict[str, dict]:
    """Each named ablation (all when none is named) run, at most `jobs` at once; what each re-ran."""
    ablations = load(root)
    unknown = [n for n in names if n not in ablations]
    if unknown:
        raise InputError(f"{ABLATIONS}: no ablation {', '.join(unknown)}; there are: {', '.join(ablations)}")
    if not (root / "metrics" / "evaluate.json").is_file():
        raise InputError(f"{root / 'metrics/evaluate.json'}: no finished run to ablate; run `dvc repro` first")
    # Every ablation checked before any workspace is touched.
    chosen = {n: check(root, n, ablations[n]) for n in names or ablations}
    env = os.environ | {
        "OMP_NUM_THREADS": str(threads_per_rank(jobs)),  # yours if set, else cores / jobs
        # The stages' `python -m ...` commands run this interpreter, as in the flows.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    waiting, running, done = list(chosen), {}, {}
    while waiting or running:
        while waiting and len(running) < jobs:
            name = waiting.pop(0)
            ws = prepare(root, name, chosen[name])
            log = open(ws / "repro.log", "w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "dvc", "repro"], cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            running[name] = (proc, log, time.time())
            print(f"ablation {name}: running (log: {ws / 'repro.log'})", file=sys.stderr)
        time.sleep(0.5)
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            ws = root / WORKSPACES / name
            done[name] = {"returncode": proc.returncode, "seconds": time.time() - start, "rerun": rerun(root, ws)}
            state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {ws / 'repro.log'})"
            print(f"ablation {name}: {state} in {done[name]['seconds']:.0f} s", file=sys.stderr)
    return done


def _named(run: dict | None, commit: bool = True) -> str:
    """A stage's MLflow run (`bar.tracking.stage_runs`' entry) as the report names it (a
    workspace's commit is its own repository's, named by no one: not shown)."""
    from bar.report import short_commit

    if not run:
        return "(not in its MLflow store)"
    return f"`{run['run_id']}`" + (f" (commit `{short_commit(run['commit'])}`)" if commit else "")


def report(root: Path) -> str:
    """reports/ablations.md from the project's and each finished workspace's metrics/evaluate.json
    (and the monolithic baseline's, when it has been run: the gap the ablations are read against)."""
    from bar.evaluation import with_overall
    from bar.tracking import stage_runs

    ablations = load(root)
    base = json.loads((root / "metrics" / "evaluate.json").read_text())
    finished = {  # a workspace whose evaluation did not run again (failed, or not run yet) is no result
        n: (json.loads((ws / "metrics" / "evaluate.json").read_text()), stages)
        for n in ablations
        if (ws := root / WORKSPACES / n).is_dir() and "evaluate" in (stages := rerun(root, ws))
    }
    domains = sorted(d for d in base["routed"] if d != "overall")
    mono = None
    if (monolithic := root / "metrics" / "baseline" / "monolithic.json").is_file():
        metrics = json.loads(monolithic.read_text())
        mono = with_overall({d: metrics[f"eval/{d}"] for d in domains}, domains)
    columns, runs = [*domains, "overall"], stage_runs(root)
    lines = [
        "# Ablations of the routed model",
        "",
        f"Written by `bar ablate` from `metrics/evaluate.json` of the project and of each workspace in "
        f"`{WORKSPACES}/` (the ablations of `{ABLATIONS}`). Pass rates on the held-out sets. An "
        "ablation's row is its score minus the project's: a positive number is what the change "
        "gains, a negative one what the project's setting is worth.",
        "",
        f"The project's `evaluate` is MLflow run {_named(runs.get('evaluate'))}"
        + (f"; the monolithic baseline's, {_named(runs.get('baseline@monolithic'))}." if mono else "."),
    ]
    for model, served in SERVED.items():
        if model not in base:
            continue
        lines += [
            "",
            f"## Routed, {served}",
            "",
            "| | " + " | ".join(columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        lines += ["| project | " + " | ".join(f"{base[model][d]:.1f}" for d in columns) + " |"]
        if mono:
            gap = " | ".join(f"{mono[d] - base[model][d]:+.1f}" for d in columns)
            lines += [f"| monolithic baseline (minus project) | {gap} |"]
        for name, (scores, _) in finished.items():
            lines += [f"| {name} | " + " | ".join(f"{scores[model][d] - base[model][d]:+.1f}" for d in columns) + " |"]
    lines += ["", "## What each changes", ""]
    lines += [
        f"- `{name}`: {ablations[name].description}. Re-ran: {', '.join(stages)}; `evaluate` is run "
        f"{_named(stage_runs(root / WORKSPACES / name).get('evaluate'), commit=False)} of `{WORKSPACES}/{name}/mlruns`."
        for name, (_, stages) in finished.items()
    ]
    text = "\n".join(lines) + "\n"
    (root / REPORT).parent.mkdir(parents=True, exist_ok=True)
    (root / REPORT).write_text(text)
    return text

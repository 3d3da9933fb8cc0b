"""`bar report`: the comparison BAR is about, in one Markdown file with its plots.

Everything is read from what the pipelines wrote, never typed in: metrics/evaluate.json (the
anchor, each expert, the merged and the routed model), metrics/baseline/*.json (the opt-in
baselines), outputs/*/train_log.json (training curves) and the MLflow store (expert versions,
the routed models built from them, and what each run cost). Writes reports/report.md and
reports/*.png for the default preset (the README run, committed), reports/<preset>/ for another
(a tiny test run never overwrites it); `--readme` also rewrites the table between the markers in
README.md, from the default preset only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bar import figures
from bar.evaluation import PER_TOKEN, mean_shares, with_overall
from bar.specs import InputError, Specs

README_START, README_END = "<!-- bar report: scores -->", "<!-- /bar report -->"
README_PRESET = "default"  # the run reports/ and the README's table hold


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{path}: not found; run `dvc repro` first (and `dvc repro baselines/dvc.yaml` for the baselines)"
        ) from None


def score_table(root: Path, specs: Specs) -> tuple[dict[str, dict[str, float]], list[str]]:
    """{row label: {domain: pass rate, overall}} for every model, and the domains."""
    evaluation = _read(root / "metrics" / "evaluate.json")
    domains = sorted(k for k in evaluation["anchor"] if k != "overall")
    rows = {"anchor": evaluation["anchor"]}
    rows |= {f"expert {e}": evaluation[f"expert:{e}"] for e in specs.params.experts}
    rows |= {"merged (before router)": evaluation["merged"], "**BAR (routed)**": evaluation["routed"]}
    if PER_TOKEN in evaluation:  # served per sequence: the same routed model with every expert per token too
        rows["BAR, every expert per token"] = evaluation[PER_TOKEN]
    for name in specs.params.baselines:
        path = root / "metrics" / "baseline" / f"{name}.json"
        if path.exists():
            metrics = json.loads(path.read_text())
            label = name if name in ("monolithic", "sequential") else f"ablation {name}"
            rows[label] = with_overall({d: metrics[f"eval/{d}"] for d in domains}, domains)
    return rows, domains


def forgetting(root: Path, specs: Specs, domains: list[str]) -> dict[str, dict[str, float]]:
    """The sequential baseline's scores after each domain it was trained on."""
    path = root / "metrics" / "baseline" / "sequential.json"
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text())
    return {
        f"after {e}": with_overall({d: metrics[f"after_{e}/eval/{d}"] for d in domains}, domains)
        for e in specs.baselines.sequential_order
        if f"after_{e}/eval/{domains[0]}" in metrics
    }


def routing(root: Path, specs: Specs, rows: dict[str, dict[str, float]]) -> tuple[dict, dict, dict]:
    """The routed model's share of router probability per slot, by input domain (mean over
    layers and tokens, in %), for each expert's domain the expert alone against routed, and
    (served per sequence) the share of each domain's prompts each expert served, in %."""
    path = root / "outputs" / "evaluate" / "routing.json"
    if not path.exists():
        return {}, {}, {}
    slots = ["anchor", *specs.params.experts]
    shares = {
        domain: {slot: 100 * share for slot, share in zip(slots, mean_shares(layers))}
        for domain, layers in json.loads(path.read_text()).items()
    }
    path = root / "outputs" / "evaluate" / "choices.json"
    choices = (
        {
            domain: {slot: 100 * share for slot, share in zip(slots[1:], served[1:])}
            for domain, served in json.loads(path.read_text()).items()
        }
        if path.exists()
        else {}
    )
    routed, gaps = rows["**BAR (routed)**"], {}
    merge_cost = _read(root / "metrics" / "evaluate.json").get("merge_cost", {})
    for e in specs.params.experts:
        domain = specs.expert(e).domain  # an expert's name need not be its domain's
        alone = rows[f"expert {e}"][domain]
        row = merge_cost.get(e, {})  # the expert as the merge leaves it; the routed model with only it and the anchor
        gaps[domain] = {
            "expert alone": alone,
            "merged shared tensors": row.get("merged_shared"),
            "routed, anchor + own only": row.get("own_only"),
            "routed": routed[domain],
            "routed - expert": routed[domain] - alone,
            "± paired SE": row.get("gap_se"),
            "own-expert share %": shares.get(domain, {}).get(e),
        }
    return shares, gaps, choices


def markdown_table(
    rows: dict[str, dict[str, float]], cols: list[str], first: str = "model", fmt: str = "{:.1f}"
) -> list[str]:
    lines = [f"| {first} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, values in rows.items():
        lines.append(
            f"| {label} | " + " | ".join("-" if values.get(c) is None else fmt.format(values[c]) for c in cols) + " |"
        )
    return lines


def upgrades(root: Path, specs: Specs, domains: list[str]) -> dict[str, dict[str, float]]:
    """For each expert with several versions: the routed model built from each version (from its
    newest run that has one: a version trained again supersedes its earlier runs)."""
    from bar import tracking

    rows = {}
    for expert in specs.params.experts:
        newest = {h["version"]: h for h in tracking.expert_history(expert, root) if h["routed"]}
        if len(newest) > 1:
            for h in sorted(newest.values(), key=lambda h: int(h["version"]) if h["version"].isdigit() else -1):
                rows[f"{expert} v{h['version']} ({h['run_id'][:8]})"] = h["routed"]
    return rows


STAGE_ORDER = (
    "prepare_data",
    "tokenizer",
    "pretrain_base",
    "train_anchor",
    "mix_data",
    "train_expert",
    "merge_experts",
    "fit_router",
    "evaluate",
    "baseline",
)


def stage_runs(root: Path) -> dict[str, dict]:
    """The MLflow run behind each stage's current outputs, in pipeline order."""
    from bar import tracking

    runs = tracking.stage_runs(root)
    named = sorted(
        (s for s in runs if s.split("@")[0] in STAGE_ORDER), key=lambda s: (STAGE_ORDER.index(s.split("@")[0]), s)
    )
    return {s: runs[s] for s in named}


def costs(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    return {
        s: {
            "tokens": c.get("cost/tokens"),
            "FLOPs": c.get("cost/flops"),
            "FLOPs from scratch": c.get("cost/flops_from_scratch", c.get("cost/flops")),
            "wall s": c.get("cost/wall_seconds"),
            "CPU s": c.get("cost/cpu_seconds"),
        }
        for s, run in runs.items()
        if (c := run["cost"])
    }


def short_commit(commit: str) -> str:
    """A run's `git_commit` tag as reports name it: 7 hex digits, `-dirty` kept."""
    return commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")


def provenance(runs: dict[str, dict], specs: Specs) -> str:
    """One line naming what the tables come from: the commits of the stage runs (how many runs
    each), the precision, the threads and evaluate's run."""
    from collections import Counter

    if not runs:
        return "No MLflow runs found for these outputs."
    commits = Counter(short_commit(r["commit"]) for r in runs.values())
    threads = sorted({r["threads"] for r in runs.values()})
    named = (
        ", ".join(f"`{c}` ({n} runs)" for c, n in commits.most_common())
        if len(commits) > 1
        else f"`{next(iter(commits))}`"
    )
    days = sorted({datetime.fromtimestamp(r["started"], UTC).date().isoformat() for r in runs.values()})
    line = (
        f"Stage runs at commit {named}, {days[0]}"
        + (f" to {days[-1]}" if len(days) > 1 else "")
        + f"; preset `{specs.params.preset}`, precision `{specs.model.precision}`, "
        + f"{'/'.join(threads)} thread(s) per process"
    )
    if "evaluate" in runs:
        line += f"; `evaluate` is MLflow run `{runs['evaluate']['run_id']}`"
    return line + "."


def folder(root: Path, specs: Specs) -> Path:
    """reports/ for the README run's preset, reports/<preset>/ for any other."""
    preset = specs.params.preset
    return root / "reports" if preset == README_PRESET else root / "reports" / preset


def build(root: Path | str = ".", readme: bool = False) -> Path:
    """Write the report and its plots (`folder`), and with `readme` the README's table; returns
    the report's path."""
    import shutil

    root = Path(root).resolve()
    specs = Specs(root)
    out = folder(root, specs)
    if readme and specs.params.preset != README_PRESET:
        raise InputError(
            f"{root / 'params.yaml'}: preset = {specs.params.preset!r}: the README's table is the "
            f"{README_PRESET} preset's run; run `bar report` without --readme (it writes "
            f"{out.relative_to(root)}/report.md), or --readme at preset: {README_PRESET}"
        )
    rows, domains = score_table(root, specs)
    runs = stage_runs(root)
    cols = [*domains, "overall"]
    scores, source = markdown_table(rows, cols), provenance(runs, specs)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# BAR report (preset `{specs.params.preset}`, seed {specs.params.seed})",
        "",
        "Generated by `bar report` from metrics/, outputs/ and mlruns/; do not edit by hand.",
        "",
        source + " Each stage's run: [Runs](#runs).",
        "",
        "## Scores",
        "",
        "Pass rate (0-100) of greedy replies on each domain's held-out prompts; overall is the mean over domains.",
        "",
        *scores,
        "",
    ]
    shares, gaps, choices = routing(root, specs, rows)
    if shares:
        lines += [
            "## Routing",
            "",
            "Each expert on its own domain: alone, with the merged shared tensors "
            "(its own FFNs and router rows, no other expert: what the merge alone costs), in the routed "
            "model with only the anchor and this expert (the other experts masked out: what their share "
            "costs is the step to the next column) and inside the routed model; the gap's paired "
            "standard error is how far it could move on another held-out set of this size:",
            "",
            *markdown_table(
                gaps,
                [
                    "expert alone",
                    "merged shared tensors",
                    "routed, anchor + own only",
                    "routed",
                    "routed - expert",
                    "± paired SE",
                    "own-expert share %",
                ],
                first="domain",
            ),
            "",
            "Share of router probability (%) per slot, mean over layers and tokens of each domain's "
            "held-out prompts and reference replies (teacher-forced):",
            "",
            *markdown_table(shares, ["anchor", *specs.params.experts], first="domain"),
            "",
        ]
    if choices:
        lines += [
            "Experts chosen per sequence (`specs/router.yaml: sequence_topk`): share (%) of each "
            "domain's held-out prompts each expert served, beside the anchor:",
            "",
            *markdown_table(choices, specs.params.experts, first="domain"),
            "",
        ]
    seq = forgetting(root, specs, domains)
    if seq:
        figures.forgetting(seq, domains, out / "forgetting.png")
        lines += [
            "## Sequential training forgets",
            "",
            *markdown_table(seq, cols, first="sequential"),
            "",
            "![forgetting](forgetting.png)",
            "",
        ]
    ups = upgrades(root, specs, domains)
    if ups:
        lines += [
            "## Upgrades",
            "",
            "The routed model built from each version of an upgraded expert.",
            "",
            *markdown_table(ups, cols, first="expert version"),
            "",
        ]
    evaluation = _read(root / "metrics" / "evaluate.json")
    cost = evaluation.get("cost", {})
    table = costs(runs)
    if table:
        lines += [
            "## Cost",
            "",
            "Training FLOPs are analytic (bar/cost.py); `FLOPs` is what the run "
            "trained, `from scratch` includes phases it started from.",
            "",
            *markdown_table(
                table, ["tokens", "FLOPs", "FLOPs from scratch", "wall s", "CPU s"], first="stage run", fmt="{:.3g}"
            ),
            "",
        ]
    if cost:
        lines += [
            f"Last assembly: re-running what changed cost {cost['upgrade_flops']:.3g} FLOPs against "
            f"{cost['retrain_flops']:.3g} for a monolithic retrain (estimated), ratio "
            f"**{cost['upgrade_ratio']:.3f}**."
        ]
        if "baseline@monolithic" in table:
            measured = table["baseline@monolithic"]["FLOPs from scratch"]
            lines += [f"The monolithic baseline actually trained {measured:.3g} FLOPs (after the anchor)."]
        lines += [""]
    if runs:
        lines += [
            "## Runs",
            "",
            "The MLflow run behind each stage's current outputs (`bar lineage` and the MLflow UI show more).",
            "",
            *markdown_table(
                {
                    s: {"MLflow run": r["run_id"], "commit": r["commit"][:12], "threads": r["threads"]}
                    for s, r in runs.items()
                },
                ["MLflow run", "commit", "threads"],
                first="stage run",
                fmt="`{}`",
            ),
            "",
        ]
    plots = [
        ("scores", root / "outputs" / "evaluate" / "scores.png"),
        ("routing", root / "outputs" / "evaluate" / "routing.png"),
        ("cost curve", root / "outputs" / "evaluate" / "cost_curve.png"),
    ]
    lines += ["## Plots", ""]
    if figures.rlvr_rewards(root, specs, out / "rlvr_reward.png"):
        lines += ["![RLVR reward](rlvr_reward.png)", ""]
    for title, src in plots:
        if src.exists():
            shutil.copy(src, out / src.name)
            lines += [f"![{title}]({src.name})", ""]
    for e in specs.params.experts:
        src = root / "outputs" / "train_expert" / e / "training.png"
        if src.exists():
            shutil.copy(src, out / f"training_{e}.png")
            lines += [f"![training {e}](training_{e}.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    if readme:
        update_readme(root, path, scores, source)
    return path


def update_readme(root: Path, report: Path, scores: list[str], source: str) -> None:
    """Replace what stands between the README markers with the report's score table (`scores`, its
    lines) and the line naming the runs it comes from (`source`)."""
    readme = root / "README.md"
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise InputError(f"{readme}: no {README_START} ... {README_END} markers to put the table between")
    table = "\n".join(scores)
    link = report.relative_to(root)
    body = (
        f"{README_START}\n{table}\n\n{source}\n"
        f"Full report: [{link}]({link}) (`bar report --readme` regenerates both).\n{README_END}"
    )
    head, _, rest = text.partition(README_START)
    readme.write_text(head + body + rest.partition(README_END)[2])

"""The PNG figures the stages and `bar report` write (matplotlib, no display)."""

from __future__ import annotations

import json
from pathlib import Path

from bar.specs import Specs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def training_curves(logs: dict[str, list[dict]], path: Path, title: str) -> None:
    """One panel per training phase: loss, and reward for RLVR."""
    plt = _pyplot()
    panels = [
        (phase, key)
        for phase, records in logs.items()
        if records
        for key in ("loss", "reward_mean")
        if key in records[0]
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (phase, key) in zip(axes[0], panels):
        records = logs[phase]
        ax.plot([r["step"] for r in records], [r[key] for r in records])
        ax.set(xlabel="step", ylabel=key, title=f"{phase}: {key}")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def scores(table: dict[str, dict[str, float]], domains: list[str], path: Path) -> None:
    """Pass rate per domain (and overall) of every model."""
    import numpy as np

    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(table)
    for i, (model, row) in enumerate(table.items()):
        ax.bar(np.arange(len(domains) + 1) + i * width, [row[d] for d in domains + ["overall"]], width, label=model)
    ax.set_xticks(np.arange(len(domains) + 1) + 0.4 - width / 2, domains + ["overall"])
    ax.set(ylabel="pass rate", ylim=(0, 100), title="held-out pass rate per domain")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def routing(shares: dict[str, list[list[float]]], experts: list[str], path: Path) -> None:
    """The routed model's router probability per expert and layer, one panel per input domain."""
    import numpy as np

    plt = _pyplot()

    slots = ["anchor", *experts]
    fig, axes = plt.subplots(1, len(shares), figsize=(3.2 * len(shares), 3), squeeze=False)
    for ax, (domain, layers) in zip(axes[0], shares.items()):
        ax.imshow(np.array(layers).T, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set(title=domain, xlabel="layer", yticks=range(len(slots)), yticklabels=slots)
    fig.suptitle("routed model: router probability per expert and layer")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cost_curve(rows: list[dict[str, float]], path: Path) -> None:
    """Training FLOPs of adding the k-th domain: BAR against a monolithic retrain (`bar.cost.curve`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [r["domains"] for r in rows]
    ax.plot(ks, [r["upgrade_flops"] for r in rows], "o-", label="BAR: one expert + router")
    ax.plot(ks, [r["retrain_flops"] for r in rows], "s-", label="monolithic retrain")
    ax.set(xlabel="number of domains", ylabel="training FLOPs", xticks=ks, title="cost of adding the k-th domain")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def rlvr_rewards(root: Path, specs: Specs, path: Path) -> bool:
    """RLVR reward per step of every model that has an RLVR phase (False: none has)."""
    plt = _pyplot()
    logs = {}
    for stage, names in (("train_expert", specs.params.experts), ("baseline", specs.params.baselines)):
        for name in names:
            log = root / "outputs" / stage / name / "train_log.json"
            if log.exists():
                for phase in sorted({r["phase"] for r in json.loads(log.read_text()) if r["phase"].startswith("rlvr")}):
                    logs[f"{name} {phase}"] = [r for r in json.loads(log.read_text()) if r["phase"] == phase]
    if not logs:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, records in logs.items():
        rewards = [r["reward_mean"] for r in records]
        window = max(1, len(rewards) // 10)  # moving mean over 10% of the run
        smooth = [
            sum(rewards[max(0, i - window + 1) : i + 1]) / len(rewards[max(0, i - window + 1) : i + 1])
            for i in range(len(rewards))
        ]
        ax.plot([r["step"] for r in records], smooth, label=label)
    ax.set(xlabel="RLVR step", ylabel="reward (moving mean)", title="RLVR reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def forgetting(rows: dict[str, dict[str, float]], domains: list[str], path: Path) -> None:
    """The sequential baseline's scores after each domain it was trained on."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = list(rows)
    for d in domains:
        ax.plot(range(len(steps)), [rows[s][d] for s in steps], "o-", label=d)
    ax.set_xticks(range(len(steps)), steps, fontsize=8)
    ax.set(ylabel="pass rate", title="sequential baseline: scores after each domain")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

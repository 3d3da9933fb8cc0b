"""Where the pipeline keeps things, and writing files that readers never see half of.

Every stage uses these paths, so `dvc.yaml` and the code name the same folders:
`outputs/<stage>/` (models, data), `metrics/<stage>.json` (DVC metrics) and
`checkpoints/<stage>/` (resumable state, not a DVC output: DVC deletes outputs when a stage
starts, which would defeat resuming).
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

OUTPUTS, METRICS, CHECKPOINTS = Path("outputs"), Path("metrics"), Path("checkpoints")


def output(stage: str, *parts: str) -> Path:
    return OUTPUTS.joinpath(stage, *parts)


@contextmanager
def atomic_dir(path: Path):
    """Yield a temporary sibling of `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    """Write JSON via a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_metrics(stage: str, metrics: dict) -> None:
    write_json(METRICS / f"{stage}.json", metrics)


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")

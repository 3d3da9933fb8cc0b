"""The pipeline stages: one `python -m bar.stages.<name>` module per DVC stage.

A stage reads its spec and its declared inputs, writes its declared outputs and nothing else,
and records one MLflow run named like the stage. The paths every stage uses live here, so
`dvc.yaml` and the code name the same folders: `outputs/<stage>/` (models, data),
`metrics/<stage>.json` (DVC metrics) and `checkpoints/<stage>/` (resumable state, not a DVC
output: DVC deletes outputs when a stage starts, which would defeat resuming).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

OUTPUTS, METRICS, CHECKPOINTS, PLOTS = Path("outputs"), Path("metrics"), Path("checkpoints"), Path("plots")

# The offline switches of the stack: stages never phone home or download.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)


def entry(main, *args) -> None:
    """Run a stage's entry point: bad input ends it with one `error:` line and exit code 2, a
    diverged training (non-finite loss) with one `error:` line and exit code 1; in a torchrun
    worker, any other error's traceback ends up in the launching stage's error too."""
    from bar.specs import InputError

    try:
        if "--worker" not in sys.argv and Path("specs/model.yaml").exists():
            check_precision()
        main(*args)
    except (InputError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        if os.environ.get("BAR_ERROR_FILE"):  # a torchrun worker: the launching stage repeats it
            Path(os.environ["BAR_ERROR_FILE"]).write_text(str(e))
        raise SystemExit(2 if isinstance(e, InputError) else 1) from None
    except Exception:
        if os.environ.get("BAR_ERROR_FILE"):
            # A torchrun worker's traceback is printed above torchrun's own, which is all that
            # the tail of a failed stage's output shows: the launching stage repeats its end.
            import traceback

            tail = traceback.format_exc().rstrip().splitlines()[-12:]
            Path(os.environ["BAR_ERROR_FILE"]).write_text("unexpected error in a worker:\n" + "\n".join(tail))
        raise


def check_precision() -> None:
    """Refuse, before any work, a precision this machine's device cannot compute in."""
    from bar.specs import SpecError, Specs

    specs = Specs()
    if specs.model.precision == "bf16":
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise SpecError(
                f"{specs.path('model')}: precision = bf16: {torch.cuda.get_device_name()} has no "
                f"bfloat16 support; allowed here: fp32"
            )


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

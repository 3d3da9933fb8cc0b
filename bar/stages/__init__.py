"""The pipeline stages: one `python -m bar.stages.<name>` module per DVC stage.

A stage is a script over the library: it reads its spec and its declared inputs, writes its
declared outputs (the paths of `bar.files`) and nothing else, and records one MLflow run named
like the stage. No stage imports another.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
    from bar.specs import SpecError, Specs, device

    specs = Specs()
    if specs.model.precision == "bf16":
        import torch

        if not device.bf16_native():
            which = torch.cuda.get_device_name() if torch.cuda.is_available() else "this CPU (no AVX512-BF16 or AMX)"
            raise SpecError(
                f"{specs.path('model')}: precision = bf16: {which} has no bfloat16 units (PyTorch would "
                f"emulate it, many times slower than fp32); allowed here: fp32, or auto (bf16 where native)"
            )

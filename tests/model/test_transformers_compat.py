"""The per-sequence routed export (modeling_bar.py) under each end of the `transformers` range
it states (`TESTED_TRANSFORMERS`): the pinned release, in this venv, and the newest one tested,
in a venv of its own that the test builds once and caches.

That venv holds only `transformers` and whatever of its requirements this venv lacks or has too
old (`pip` sees this venv's packages through a .pth file and installs nothing it already has);
everything else, torch included, is imported from this venv. It lives under
$BAR_VENV_CACHE (default ~/.cache/bar), as venv-transformers-<version>, and needs the package
registry once, to be built; without it the test fails and says so. The release checked beside
the pin is the newest on the registry in CI (`CI=true`: the next API change fails CI, not a
user) and the newest tested one elsewhere; BAR_TRANSFORMERS_VERSION sets another (`newest`: the
registry's). A release newer than the tested range must give bar's tokens too; only the
range's own warning is allowed then.

Each run loads the export in a fresh interpreter, with `trust_remote_code=True` and bar made
unimportable (the export's code must import nothing of bar's), generates greedily prompt by
prompt and as a left-padded batch (as lm-eval does), and must give bar.decode's tokens
without a FutureWarning: under transformers 5.24+ a stale modeling_bar.py (reading
`past_key_values`, renamed `cache`) gave wrong tokens and only a FutureWarning.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import small_arch

ARCH = small_arch()

MAX_NEW = 10

# Run in the interpreter under test: argv[1] is a JSON request, stdout the JSON answer.
SCRIPT = r"""
import json, sys, warnings
sys.modules["bar"] = None  # importing bar raises: the export must not need it
import torch, transformers
from transformers import AutoModelForCausalLM

req = json.loads(sys.argv[1])
stops = set(req["stop_ids"])
kw = dict(max_new_tokens=req["max_new_tokens"], do_sample=False, eos_token_id=sorted(stops),
          pad_token_id=req["pad_id"])

def cut(row):
    row = row[:req["max_new_tokens"]]
    return next((row[:i + 1] for i, t in enumerate(row) if t in stops), row)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    hf = AutoModelForCausalLM.from_pretrained(req["folder"], trust_remote_code=True).eval()
    alone = [cut(hf.generate(torch.tensor([p]), **kw)[0, len(p):].tolist()) for p in req["prompts"]]
    width = max(map(len, req["prompts"]))
    ids = torch.tensor([[req["pad_id"]] * (width - len(p)) + p for p in req["prompts"]])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in req["prompts"]])
    try:
        batch = [cut(row) for row in hf.generate(ids, attention_mask=mask, **kw)[:, width:].tolist()]
    except Exception as e:  # reported beside the other answers
        batch = f"{type(e).__name__}: {e}"
print(json.dumps({"transformers": transformers.__version__, "torch": torch.__file__,
                  "class": type(hf).__name__, "alone": alone, "batch": batch,
                  "warnings": [str(w.message) for w in caught  # deprecations, and the range's own
                               if issubclass(w.category, FutureWarning) or "BarMoeForCausalLM" in str(w.message)]}))
"""


def supported_range() -> tuple[str, str]:
    from bar.model.modeling_bar import TESTED_TRANSFORMERS

    return TESTED_TRANSFORMERS


def newest_on_registry() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "transformers", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"^transformers \(([^)]+)\)", out.stdout, re.M)
    if not found:
        pytest.fail(
            f"BAR_TRANSFORMERS_VERSION=newest: the package registry did not answer "
            f"`pip index versions transformers`:\n{out.stderr[-2000:]}"
        )
    return found.group(1)


def transformers_venv(version: str) -> Path:
    """The interpreter of a venv with `transformers==version` over this venv's packages
    (built on first use, then reused while it still points at this venv)."""
    base = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    cache = Path(os.environ.get("BAR_VENV_CACHE", Path.home() / ".cache" / "bar"))
    venv = cache / f"venv-transformers-{version}"
    python, ready = venv / "bin" / "python", venv / "bar-ready.json"
    stamp = {"transformers": version, "base": base}
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"venv-transformers-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time
        if ready.exists() and json.loads(ready.read_text()) == stamp:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # Listed after the venv's own site-packages: its transformers wins, torch comes from here.
        Path(purelib, "_bar_base.pth").write_text("".join(p + "\n" for p in base))
        constraints = venv / "constraints.txt"  # never another torch (multi-GB CUDA wheels)
        constraints.write_text(f"torch=={torch.__version__}\n")
        try:
            pip = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python),
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-c",
                    str(constraints),
                    f"transformers=={version}",
                ],
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"building {venv}: pip install transformers=={version} took over 15 minutes "
                "(is the package registry reachable?)"
            )
        if pip.returncode:
            pytest.fail(
                f"building {venv} needs the package registry once (pip install "
                f"transformers=={version}), and pip failed:\n{pip.stderr[-3000:]}"
            )
        ready.write_text(json.dumps(stamp))
    return python


@pytest.fixture(scope="module")
def routed_export(tmp_path_factory, megatron):
    """A 4-expert MoE choosing 1 expert per sequence, exported, and bar.decode's greedy
    replies to a few prompts: alone and as one batch."""
    from bar.decode import generate
    from bar.model import build
    from bar.model.hf import export
    from bar.tokenizer import stop_ids
    from bar.tokenizer import train as train_tokenizer
    from bar.train.checkpoint import full_state

    torch.manual_seed(0)
    model = build(ARCH, 1, num_experts=4).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.mlp.router.weight.normal_(0, 1.0)  # routing far from uniform
    tok = train_tokenizer(["hello world 123"] * 20, 300, 1, 2)
    folder = tmp_path_factory.mktemp("routed") / "hf"
    export(full_state(model), ARCH, tok, folder, num_experts=4, sequence_topk=1)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, len(tok), (n,), generator=g).tolist() for n in (4, 7, 11, 6, 9, 5)]
    kw = dict(max_new_tokens=MAX_NEW, stop_ids=stop_ids(tok), vocab_size=len(tok), pad_id=tok.pad_token_id)
    alone = [generate(model, [p], sequence_topk=1, **kw)[0] for p in prompts]
    batch = generate(model, prompts, sequence_topk=1, **kw)
    every_expert = generate(model, prompts, **kw)
    assert batch != every_expert  # choosing per sequence changes the replies: the check can fail
    request = {
        "folder": str(folder),
        "prompts": prompts,
        "max_new_tokens": MAX_NEW,
        "stop_ids": sorted(stop_ids(tok)),
        "pad_id": tok.pad_token_id,
    }
    return request, alone, batch


@pytest.mark.parametrize("end", ["pinned", "newest"])
def test_the_routed_export_generates_as_bar_under_each_end_of_its_transformers_range(routed_export, end):
    import transformers

    low, high = supported_range()
    if end == "pinned":
        assert transformers.__version__ == low, (
            f"this venv pins transformers {transformers.__version__}; modeling_bar.TESTED_TRANSFORMERS "
            f"starts at {low}: update it"
        )
        version, python = low, sys.executable
    else:
        version = os.environ.get("BAR_TRANSFORMERS_VERSION") or ("newest" if os.environ.get("CI") else high)
        version = newest_on_registry() if version == "newest" else version
        python = transformers_venv(version)
    request, alone, batch = routed_export
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [str(python), "-c", SCRIPT, json.dumps(request)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(request["folder"]).parent,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["transformers"] == version
    assert Path(got["torch"]).resolve() == Path(torch.__file__).resolve()  # this venv's torch
    assert got["class"] == "BarMoeForCausalLM"
    assert got["alone"] == alone
    assert got["batch"] == batch
    from packaging.version import Version

    beyond = Version(version).release[:2] > Version(high).release[:2]
    warned = [w for w in got["warnings"] if not (beyond and w.startswith("BarMoeForCausalLM is tested with"))]
    assert warned == []
    if beyond:
        print(
            f"transformers {version} is newer than the tested range {low}..{high} and gives bar's tokens: "
            f"extend modeling_bar.TESTED_TRANSFORMERS"
        )

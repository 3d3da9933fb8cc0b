"""An expert's phases (midtrain, SFT, RLVR) and a router fit under tensor + sequence
parallelism, data parallelism and micro-batches, through real torchrun workers, against one
process: the same losses and weights, the anchor FFN bit for bit, the same greedy rollouts."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import edit_yaml

pytestmark = pytest.mark.slow

# One torchrun worker: argv = project, tp, dp, micro-batch rows (0: none), output file.
WORKER = r"""
import os, sys
from pathlib import Path

import torch
from safetensors.torch import load_file

project, tp, dp, micro, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) or None, sys.argv[5]
os.chdir(project)
from bar import parallel, tokenizer
from bar.data.example import read_examples
from bar.decode import generate
from bar.files import output
from bar.model import build
from bar.model.moe import set_trainable
from bar.router import DomainRouting
from bar.specs import Specs
from bar.train import train
from bar.train.checkpoint import Resumable, full_state
from bar.train.phases import Phase, adapt, branch, check_anchor_ffn

specs = Specs(project)
parallel.init(tp, 0, dp)
tok = tokenizer.load(output("tokenizer"))
anchor = load_file(output("train_anchor", "model.safetensors"))
math = output("prepare_data", "math")
expert = specs.expert("math").phases
everything = ["domain_ffn", "router", "embeddings", "lm_head", "attention", "norms"]
phases = [
    Phase("midtrain", "midtrain", expert.midtrain.model_copy(update={"steps": 8, "micro_batch_size": micro}), [math]),
    # Every group trains: the norms' and the router's gradients are summed over the ranks that
    # each hold a slice of the sequence.
    Phase("sft", "sft", expert.sft.model_copy(update={"steps": 8, "micro_batch_size": micro, "trainable": everything, "lr_scale": {}}), [math]),
    Phase("rlvr", "rlvr", expert.rlvr.model_copy(update={"steps": 4, "micro_batch_size": micro and 2 * micro, "kl_coef": 0.02}), [math]),
]
model = branch(specs, tp, anchor)
logs, _ = adapt(model, phases, Path(out).with_suffix("") / "expert", "run", specs, tok, tp, "expert")
assert check_anchor_ffn(model, anchor, "expert", phases)  # frozen, checked bit for bit
prompts = [tokenizer.prompt_ids(tok, e.prompt) for e in read_examples(math / "eval.jsonl")[:6]]
greedy = generate(model, prompts, max_new_tokens=12, stop_ids=tokenizer.stop_ids(tok), vocab_size=len(tok), pad_id=tok.pad_token_id)
weights = full_state(model)

# A router of three slots (anchor and two experts) fitted with the z-loss and the domain loss.
torch.manual_seed(1)
routed = build(specs.model, tp, num_experts=3, z_loss=1e-3)
set_trainable(routed, ["router"], freeze_anchor_row=False)
items, slots = [], []
for slot, domain in ((1, "math"), (2, "code")):
    for e in read_examples(output("prepare_data", domain, "sft.jsonl"))[:24]:
        items.append(tokenizer.chat_ids(tok, e.prompt, e.response))
        slots.append(slot)
spec = specs.router.model_copy(update={"steps": 8})
batches = DomainRouting(routed, items, slots, 1.0, batch_size=spec.batch_size, seq_length=specs.model.seq_length, pad_id=tok.pad_token_id, seed=0)
router_log = train(routed, batches, spec, Resumable(Path(out).with_suffix("") / "router", "run"), "router", micro_batch_size=micro)
routers = {k: v for k, v in full_state(routed).items() if k.endswith("router.weight")}
if parallel.rank() == 0:
    torch.save({"logs": logs, "greedy": greedy, "weights": weights, "router_log": router_log, "routers": routers}, out)
parallel.shutdown()
"""


def layout(project: Path, tmp: Path, tp: int, dp: int, micro: int = 0) -> dict:
    import torch

    out = tmp / f"tp{tp}-dp{dp}-micro{micro}.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp * dp}"]
        + [str(tmp / "worker.py"), str(project), str(tp), str(dp), str(micro), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return torch.load(out)


def losses(result: dict) -> list[float]:
    return [r["loss"] for phase in ("midtrain", "sft", "rlvr") for r in result["logs"][phase]] + [
        r["loss"] for r in result["router_log"]
    ]


def test_an_expert_and_a_router_train_alike_at_any_layout(tiny_project, tmp_path, megatron, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from bar.files import output
    from bar.model import build
    from bar.specs import Specs
    from bar.train.checkpoint import full_state

    edit_yaml(tiny_project / "specs" / "model.yaml", "precision", "fp32")  # bf16 would round the layouts apart
    monkeypatch.chdir(tiny_project)
    specs = Specs(tiny_project)
    for stage, seed in (("train_anchor", 0), ("pretrain_base", 1)):
        torch.manual_seed(seed)
        output(stage).mkdir(parents=True, exist_ok=True)
        save_file(full_state(build(specs.model, 1)), output(stage, "model.safetensors"))
    (tmp_path / "worker.py").write_text(WORKER)
    one = layout(tiny_project, tmp_path, 1, 1)
    runs = {
        "tp 2": layout(tiny_project, tmp_path, 2, 1),
        # Each replica's 4 rows of a step in micro-batches of 2 (RLVR: 8 completions in 2 of 4).
        "tp 2 x dp 2, micro-batches": layout(tiny_project, tmp_path, 2, 2, micro=2),
    }
    first = losses(one)
    assert len(first) == 8 + 8 + 4 + 8 and first[7] < first[0]  # midtrain learns
    for name, run in runs.items():
        loss = max(abs(a - b) for a, b in zip(first, losses(run)))
        weights = max((one["weights"][k] - run["weights"][k]).abs().max().item() for k in one["weights"])
        routers = max((one["routers"][k] - run["routers"][k]).abs().max().item() for k in one["routers"])
        print(f"{name} vs one process: losses {loss:.1e}, expert weights {weights:.1e}, routers {routers:.1e}")
        assert loss < 1e-4 and weights < 1e-5 and routers < 1e-5, name
        assert run["greedy"] == one["greedy"], name
        rewards = [r["reward_mean"] for r in run["logs"]["rlvr"]]
        assert rewards == [r["reward_mean"] for r in one["logs"]["rlvr"]], name  # the same samples

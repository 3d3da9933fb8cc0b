"""Mutation run: each mutation below breaks one claim of bar's code; the tests named with it must
fail. Not part of the suite (its name is not test_*); run it by hand, from the project root:

    python tests/mutations.py [--only SUBSTRING] [--slow]

Each mutation is a textual replacement that must match its file exactly once. The project's
`bar/` and `tests/` are copied once to a temporary directory; each mutation is applied there,
its tests run (`pytest -x`, in that copy, with one thread), and the file is restored. It prints
a table: mutation | tests | caught | seconds. `--slow` adds the mutations whose tests run real
torchrun workers (about a minute each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: list[str]
    slow: bool = False


T = "tests/"
MUTATIONS = [
    Mutation(
        "an expert phase trains without its lr_scale",
        "bar/train/phases.py",
        'f"{desc} {ph.label}", ph.spec.lr_scale, ph.spec.micro_batch_size',
        'f"{desc} {ph.label}", None, ph.spec.micro_batch_size',
        [T + "train/test_phases.py::test_a_phase_trains_each_group_at_its_lr_scale"],
    ),
    Mutation(
        "disjoint_mean drops the last expert's change",
        "bar/merge.py",
        "delta = t.double() - base.get_tensor(key).double()",
        "delta = (t.double() - base.get_tensor(key).double()) * (i < len(names))",
        [T + "test_merge.py::test_disjoint_mean_averages_each_element_over_the_experts_that_changed_it"],
    ),
    Mutation(
        "mean drops an expert",
        "bar/merge.py",
        "coef = {n: 1 / len(names) for n in names}",
        "coef = {n: 1 / len(names) if n != names[-1] else 0.0 for n in names}",
        [T + "test_merge.py::test_slots_rows_and_mean"],
    ),
    Mutation(
        "the merged router's anchor row is zeroed",
        "bar/merge.py",
        "out[name][ANCHOR_SLOT] = row",
        "out[name][ANCHOR_SLOT] = 0",
        [T + "test_merge.py::test_slots_rows_and_mean"],
    ),
    Mutation(
        "LoopSpec.steps unbounded (every training loop)",
        "bar/specs/declarations.py",
        "    steps: int = Field(gt=0)\n    optim: OptimSpec",
        "    steps: int = Field()\n    optim: OptimSpec",
        [T + "test_specs_fuzz.py::test_a_value_outside_a_declared_bound_is_refused_naming_file_key_and_value"],
    ),
    Mutation(
        "TrainSpec.batch_size unbounded",
        "bar/specs/declarations.py",
        'batch_size: int = Field(gt=0, description="sequences',
        'batch_size: int = Field(description="sequences',
        [T + "test_specs_fuzz.py::test_a_value_outside_a_declared_bound_is_refused_naming_file_key_and_value"],
    ),
    Mutation(
        "RLVRSpec.prompts_per_step unbounded, group_size 1 allowed",
        "bar/specs/experts.py",
        "prompts_per_step: int = Field(8, gt=0)\n    group_size: int = Field(8, gt=1,",
        "prompts_per_step: int = Field(8)\n    group_size: int = Field(8, gt=0,",
        [T + "test_specs_fuzz.py::test_a_value_outside_a_declared_bound_is_refused_naming_file_key_and_value"],
    ),
    Mutation(
        "unknown spec keys accepted",
        "bar/specs/declarations.py",
        'ConfigDict(extra="forbid", frozen=True)',
        'ConfigDict(extra="ignore", frozen=True)',
        [T + "test_specs.py", T + "test_specs_fuzz.py"],
    ),
    Mutation(
        "a resume never happens (restart from step 0)",
        "bar/train/checkpoint.py",
        "found = parallel.broadcast_object(self.latest() if parallel.rank() == 0 else None)",
        "found = None",
        [T + "train/test_checkpoint.py::test_a_resumed_run_says_and_records_the_step_it_resumed_from"],
    ),
    Mutation(
        "a resume never happens, killed worker (torchrun)",
        "bar/train/checkpoint.py",
        "found = parallel.broadcast_object(self.latest() if parallel.rank() == 0 else None)",
        "found = None",
        [T + "train/test_tp_and_resume.py::test_killed_training_resumes_from_its_last_checkpoint_to_the_same_weights"],
        slow=True,
    ),
    Mutation(
        "resume skips the optimizer state",
        "bar/train/checkpoint.py",
        'optimizer.load_state_tensors(load_file(path / "optim.safetensors"))',
        "pass",
        [T + "train/test_checkpoint.py::test_restore_brings_back_the_weights_and_every_adamw_moment_exactly"],
    ),
    Mutation(
        "GRPO advantage sign flipped",
        "bar/train/rlvr.py",
        "(r - r.mean(1, keepdim=True))",
        "(r.mean(1, keepdim=True) - r)",
        [T + "train/test_rlvr.py"],
    ),
    Mutation(
        "GRPO ratio not clipped",
        "bar/train/rlvr.py",
        "ratio.clamp(1 - spec.clip_eps, 1 + spec.clip_eps) * a",
        "ratio * a",
        [T + "train/test_rlvr.py"],
    ),
    Mutation(
        "GRPO ignores the completion mask",
        "bar/train/rlvr.py",
        "loss = ((per_token * mask).sum(1) / lengths).mean()",
        "loss = (per_token.sum(1) / lengths).mean()",
        [T + "train/test_rlvr.py"],
    ),
    Mutation(
        "GRPO KL penalty subtracted",
        "bar/train/rlvr.py",
        "per_token = per_token + spec.kl_coef * kl",
        "per_token = per_token - spec.kl_coef * kl",
        [T + "train/test_rlvr.py"],
    ),
    Mutation(
        "RLVR completion mask shifted by one",
        "bar/train/rlvr.py",
        "mask[i, len(p) - 1 : len(p) - 1 + len(c)] = 1.0",
        "mask[i, len(p) : len(p) + len(c)] = 1.0",
        [T + "train/test_rlvr.py"],
    ),
    Mutation(
        "lr warmup off by one",
        "bar/train/__init__.py",
        "optim.lr * (step + 1) / optim.warmup_steps",
        "optim.lr * step / optim.warmup_steps",
        [T + "train/test_lr.py"],
    ),
    Mutation(
        "cosine schedule is linear",
        "bar/train/__init__.py",
        '0.5 * (1 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1 - progress',
        "1 - progress",
        [T + "train/test_lr.py"],
    ),
    Mutation(
        "router z-loss ignored",
        "bar/model/__init__.py",
        "moe_z_loss_coeff=z_loss or None",
        "moe_z_loss_coeff=None",
        [T + "model/test_moe.py::test_each_router_loss_coefficient_changes_the_routers_gradient"],
    ),
    Mutation(
        "router load balancing ignored",
        "bar/model/__init__.py",
        "moe_aux_loss_coeff=load_balancing,",
        "moe_aux_loss_coeff=0.0,",
        [T + "model/test_moe.py::test_each_router_loss_coefficient_changes_the_routers_gradient"],
    ),
    Mutation(
        "the anchor FFN trains",
        "bar/model/moe.py",
        'return None if int(m.group(2)) == ANCHOR_SLOT else "domain_ffn"',
        'return "domain_ffn"',
        [
            T + "model/test_moe.py::test_upcycle_slots_and_groups",
            T + "model/test_moe.py::test_moe_megatron_matches_mixtral_and_anchor_stays_frozen",
        ],
    ),
    Mutation(
        "promotion never moves the expert's champion",
        "bar/promote.py",
        'tracking.set_alias(f"bar-expert-{expert}", tracking.CHAMPION, expert_version, root)',
        "pass",
        [T + "test_upgrade_gate.py"],
    ),
    Mutation(
        "promotion ignores the tolerance",
        "bar/promote.py",
        "if d != domain and -v > spec.tolerance",
        "if False",
        [T + "test_upgrade_gate.py", T + "test_promote.py"],
    ),
    Mutation(
        "the export re-chooses experts (transformers >= 5.24 passes cache=)",
        "bar/model/modeling_bar.py",
        "past_length(kwargs) == 0",
        'kwargs.get("past_key_values") is None',
        [T + "model/test_transformers_compat.py"],
    ),
    Mutation(
        "the sandbox allows any import",
        "bar/data/_sandbox_child.py",
        'if level != 0 or name.partition(".")[0] not in ALLOWED_IMPORTS:',
        "if False:",
        [T + "data/test_sandbox.py"],
    ),
    Mutation(
        "bf16 trains without fp32 main weights",
        "bar/train/optimizer.py",
        "        if p.dtype == torch.float32:\n            return p",
        "        if True:\n            return p",
        [T + "train/test_optimizer.py"],
    ),
    Mutation(
        "bf16 gradients accumulate in bf16",
        "bar/train/optimizer.py",
        "main.grad = param.grad.float() if main.grad is None else main.grad.add_(param.grad)",
        "main.grad = (param.grad if main.grad is None else main.grad.bfloat16() + param.grad).float()",
        [T + "train/test_optimizer.py"],
    ),
    Mutation(
        "packed documents attend across documents",
        "bar/model/attention.py",
        "starts = [0] + [t for t in range(1, len(ids)) if ids[t] != ids[t - 1]] + [len(ids)]",
        "starts = [0, len(ids)]",
        [T + "model/test_attention.py"],
    ),
    Mutation(
        "the flow runs one stage at a time whatever max_parallel says",
        "flows/pipeline.py",
        "            if len(running) >= max_parallel:",
        "            if running:",
        [T + "test_flows.py::test_two_stages_whose_inputs_are_ready_run_at_the_same_time"],
    ),
    Mutation(
        "the flow's command line takes a plan DVC made for other targets",
        "flows/todo.py",
        "if proc.returncode or key(root, targets) != self.key:",
        "if proc.returncode:",
        [T + "test_flows.py::test_the_command_line_asks_dvc_beside_the_prefect_import_and_hands_the_plan_over_once"],
    ),
    Mutation(
        "DVC's .gitignore order counts in a folder's hash",
        ".dvcignore",
        "outputs/train_expert).\n.gitignore\n",
        "outputs/train_expert).\n",
        [T + "test_flows.py::test_two_stages_whose_inputs_are_ready_run_at_the_same_time"],
    ),
    Mutation(
        "a decoding tensor without its device",
        "bar/decode.py",
        "done = torch.zeros(batch, dtype=torch.bool, device=device)",
        "done = torch.zeros(batch, dtype=torch.bool)",
        [T + "parallel/test_devices.py"],
    ),
    Mutation(
        "sequence-parallel weights keep each rank's share of their gradient",
        "bar/train/optimizer.py",
        "            self._summed(self._sequence_parallel, parallel.sum_over_tp)",
        "            pass",
        [T + "train/test_moe_parallel.py"],
        slow=True,
    ),
    Mutation(
        "a data-parallel replica samples its rollouts as if they were the whole batch",
        "bar/decode.py",
        "nxt = (probs / q[first : first + batch]).argmax(dim=-1).to(device)",
        "nxt = (probs / q[:batch]).argmax(dim=-1).to(device)",
        [T + "train/test_moe_parallel.py"],
        slow=True,
    ),
    Mutation(
        "a checkpoint keeps only its replica's share of the optimizer state",
        "bar/train/optimizer.py",
        "if parallel.dp_size() > 1:  # each replica holds its share: every replica gathers all of it",
        "if False:",
        [T + "train/test_tp_and_resume.py::test_dp2_and_two_nodes_match_dp1"],
        slow=True,
    ),
    Mutation(
        "recomputation without gradients into the first layer (frozen embeddings)",
        "bar/model/__init__.py",
        "        model.embedding.register_forward_hook(_needs_grad)",
        "        pass",
        [T + "train/test_loop.py::test_recomputed_activations_give_the_same_gradients"],
    ),
    Mutation(
        "a conversation trains its last assistant turn only",
        "bar/tokenizer.py",
        "train = not last_turn_only or j == turns[-1]",
        "train = j == turns[-1]",
        [T + "train/test_phases.py::test_an_expert_trains_on_conversations_with_tools_loss_on_assistant_tokens_only"],
    ),
    Mutation(
        "an anchor with another tokenizer is taken",
        "bar/specs/base_model.py",
        "    if mine != its:\n        token = min(",
        "    if False:\n        token = min(",
        [T + "test_specs.py::test_a_bad_anchor_is_one_clear_line"],
    ),
    Mutation(
        "stages logging one dataset at once do not retry",
        "bar/tracking/runs.py",
        "def log_input(mlflow, dataset, context: str, attempts: int = 5)",
        "def log_input(mlflow, dataset, context: str, attempts: int = 1)",
        [T + "test_tracking.py::test_stages_logging_one_dataset_at_once_all_succeed"],
    ),
    Mutation(
        "train_turns: last is ignored",
        "bar/data/prepare.py",
        'last = spec.train_turns == "last"',
        "last = False",
        [T + "train/test_phases.py::test_an_expert_trains_on_conversations_with_tools_loss_on_assistant_tokens_only"],
    ),
    Mutation(
        "a mixture's shares drop their remainders",
        "bar/data/mixture.py",
        "[: total - sum(counts.values())]",
        "[:0]",
        [T + "data/test_mixture.py"],
    ),
    Mutation(
        "every expert draws the same rows",
        "bar/data/mixture.py",
        "random.Random(derived_seed(seed, name, domain, split)).sample(pool, n)",
        "random.Random(derived_seed(seed, domain, split)).sample(pool, n)",
        [T + "data/test_mixture.py"],
    ),
    Mutation(
        "publishing a stage removes its phases' finals too",
        "bar/runner.py",
        'if p.name != "final":',
        "if True:",
        [T + "test_runner.py"],
    ),
    Mutation(
        "a long document is cut to one row",
        "bar/train/batches.py",
        "for s in range(0, len(i), width))",
        "for s in range(0, min(len(i), 1)))",
        [T + "train/test_batches.py"],
    ),
    Mutation(
        "a conversation longer than a row is taken as fitting (and cut when packed)",
        "bar/tokenizer.py",
        "if n <= seq_length + 1:",
        "if True:",
        [T + "test_tokenizer.py"],
    ),
    Mutation(
        "the tokenizer stage lets a too-long conversation through",
        "bar/data/prepare.py",
        "if problem and not skip[domain]:",
        "if False:",
        [T + "test_tokenizer.py"],
    ),
    Mutation(
        "a sliding-window layer attends to every token",
        "bar/model/attention.py",
        "attend, is_causal = band if attend is None else attend & band, False",
        "attend, is_causal = attend, is_causal",
        [T + "model/test_attention.py", T + "model/test_base_import.py", T + "model/test_hf.py"],
    ),
    Mutation(
        "a packed document longer than the window attends to all of itself",
        "bar/model/attention.py",
        "attn_mask=self._band(b - a, b - a, q.device) if self._slides(b - a) else None,",
        "attn_mask=None,",
        [T + "model/test_attention.py"],
    ),
    Mutation(
        "bar's decoder ignores sliding windows",
        "bar/decode.py",
        "for w in set(self.windows) if w and end > w}",
        "for w in set(self.windows) if False}",
        [T + "model/test_hf.py"],
    ),
    Mutation(
        "an import at tp 2 loads every shard as a whole tensor",
        "bar/model/__init__.py",
        "    if not initialize:\n        _take_parallel_attributes(model, config, arch, num_experts)\n",
        "",
        [T + "stages/test_base_model.py::test_a_base_of_each_family_imports_through_pretrain_base"],
        slow=True,
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the mutations whose name contains this")
    parser.add_argument("--slow", action="store_true", help="also the mutations whose tests run torchrun")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if (args.slow or not m.slow) and (not args.only or args.only in m.name)]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for name in [
            "bar",
            "tests",
            "specs",
            "data",
            "flows",
            "dvc.yaml",
            "params.yaml",
            "pyproject.toml",
            "baselines",
            ".dvc",
            ".dvcignore",
            ".gitignore",
        ]:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy(src, copy / name)
        env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
        rows = []
        for m in chosen:
            path = copy / m.path
            original = path.read_text()
            if original.count(m.old) != 1:
                raise SystemExit(f"{m.name}: {m.path} has {original.count(m.old)} matches of the text to mutate")
            path.write_text(original.replace(m.old, m.new))
            start = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:randomly", *m.tests],
                cwd=copy,
                env=env,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - start
            path.write_text(original)
            caught = run.returncode == 1  # 1: tests failed; other codes: the run itself broke
            if run.returncode not in (0, 1):
                raise SystemExit(f"{m.name}: pytest exited {run.returncode}:\n{run.stdout[-3000:]}")
            rows.append((m.name, ", ".join(t.removeprefix(T) for t in m.tests), caught, seconds))
            print(f"{'caught' if caught else 'MISSED'} {seconds:6.1f} s  {m.name}", flush=True)
    print("\n| mutation | tests | caught | seconds |\n|---|---|---|---|")
    for name, tests, caught, seconds in rows:
        print(f"| {name} | {tests} | {'yes' if caught else 'NO'} | {seconds:.1f} |")
    missed = [r for r in rows if not r[2]]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} caught")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()

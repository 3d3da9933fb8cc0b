"""AdamW over fp32 main weights, whatever precision the model computes in.

A float32 model trains its own parameters. A bf16 model trains float32 copies of the
parameters that require grad (main weights): each backward's bf16 gradient is added into the
main weight's float32 gradient as soon as autograd has it (so gradients accumulate in fp32),
clipping and AdamW (its moments in fp32) work on the main weights, and the step writes them
back to the model rounded to bf16. This is Megatron-Core's `Float16OptimizerWithFloat16Params`
with its grad buffers; that class cannot run on a CPU (it accepts only parameters whose
`param.type()` is `torch.cuda.BFloat16Tensor` and raises TypeError on others), so bar keeps
the same numerics here, on any device.
"""

from __future__ import annotations

import torch

from bar import parallel
from bar.specs import OptimSpec

_TP_ATTRIBUTES = ("tensor_model_parallel", "partition_dim", "partition_stride")


class Optimizer:
    def __init__(self, model, optim: OptimSpec, lr_scale: dict[str, float] | None = None):
        """AdamW over the parameters of `model` that require grad. `lr_scale` multiplies the
        learning rate of named parameter groups (`bar.model.moe.group_of`); see `set_lr`."""
        from bar.model.moe import group_of

        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.main = {name: self._main_of(p) for name, p in self.params.items()}
        groups: dict[tuple[float, float], list[torch.Tensor]] = {}
        for name, p in self.params.items():
            scale = lr_scale.get(group_of(name), 1.0) if lr_scale else 1.0
            # Weight decay on matrices only (not on norms), as in GPT-2/Llama recipes.
            decay = optim.weight_decay if p.ndim >= 2 else 0.0
            groups.setdefault((scale, decay), []).append(self.main[name])
        # The fused kernel (CPU and CUDA): one pass over each tensor instead of a dozen; on this
        # machine's CPU a step of the default model's optimizer runs several times faster.
        self.adamw = torch.optim.AdamW(
            [{"params": ps, "weight_decay": decay, "lr_scale": scale} for (scale, decay), ps in groups.items()],
            lr=optim.lr,
            betas=optim.betas,
            fused=True,
        )
        self._copies = [(p, self.main[n]) for n, p in self.params.items() if self.main[n] is not p]

    @staticmethod
    def _main_of(p: torch.nn.Parameter) -> torch.Tensor:
        if p.dtype == torch.float32:
            return p
        main = p.detach().float().clone()
        for attr in _TP_ATTRIBUTES:
            if hasattr(p, attr):
                setattr(main, attr, getattr(p, attr))
        p.main_param = main  # a later optimizer of the same model (the next phase) takes it over
        if not getattr(p, "_accumulates_into_main", False):
            p.register_post_accumulate_grad_hook(_accumulate)
            p._accumulates_into_main = True
        return main

    def set_lr(self, lr: float) -> None:
        for group in self.adamw.param_groups:
            group["lr"] = lr * group["lr_scale"]

    def zero_grad(self) -> None:
        for name, p in self.params.items():
            p.grad = None
            self.main[name].grad = None

    @torch.no_grad()
    def step(self, max_norm: float = 0.0) -> float:
        """Sum the gradients over the data-parallel replicas, clip them to `max_norm` (0: no
        clipping), take an AdamW step and write the main weights back into the model; returns the
        gradients' global norm before clipping."""
        if parallel.dp_size() > 1:
            for m in self.main.values():  # every replica reduces the same list
                if m.grad is None:
                    m.grad = torch.zeros_like(m)
            parallel.sum_over_replicas([m.grad for m in self.main.values()])
        norm = parallel.clip_grad_norm(list(self.main.values()), max_norm)
        self.adamw.step()
        if self._copies:
            torch._foreach_copy_([p for p, _ in self._copies], [m for _, m in self._copies])
        return norm

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """AdamW's moments and step and, for a model in bf16, the fp32 main weights: full tensors in
        host memory, named after the model's parameters (collective under tensor parallelism)."""
        out = {}
        for name, p in self.params.items():
            main = self.main[name]
            if st := self.adamw.state.get(main):
                out[f"{name}.exp_avg"] = parallel.full_tensor(p, st["exp_avg"]).contiguous().cpu()
                out[f"{name}.exp_avg_sq"] = parallel.full_tensor(p, st["exp_avg_sq"]).contiguous().cpu()
                out[f"{name}.step"] = st["step"].detach().clone().reshape(1).cpu()
            if main is not p:
                out[f"{name}.main"] = parallel.full_tensor(p, main).contiguous().cpu()
        return out

    @torch.no_grad()
    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """The inverse of `state_tensors` (full tensors; this rank takes its shards)."""
        for name, p in self.params.items():
            main = self.main[name]
            if main is not p and f"{name}.main" in state:
                main.copy_(parallel.local_shard(p, state[f"{name}.main"]))
            if f"{name}.step" in state:
                self.adamw.state[main] = {
                    "step": state[f"{name}.step"].reshape(()).to(main.device, copy=True),  # fused AdamW: on the device
                    "exp_avg": parallel.local_shard(p, state[f"{name}.exp_avg"]).to(main.device, copy=True),
                    "exp_avg_sq": parallel.local_shard(p, state[f"{name}.exp_avg_sq"]).to(main.device, copy=True),
                }


def _accumulate(param: torch.Tensor) -> None:
    """Add a bf16 parameter's new gradient into its main weight's fp32 gradient."""
    main = param.main_param
    main.grad = param.grad.float() if main.grad is None else main.grad.add_(param.grad)
    param.grad = None

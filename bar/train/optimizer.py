"""AdamW over fp32 main weights, whatever precision the model computes in, sharded over the
data-parallel replicas.

A float32 model trains its own parameters. A bf16 model trains float32 copies of the
parameters that require grad (main weights): each backward's bf16 gradient is added into an
fp32 gradient as soon as autograd has it (so gradients accumulate in fp32), clipping and AdamW
(its moments in fp32) work on the main weights, and the step writes them back to the model
rounded to bf16. This is Megatron-Core's `Float16OptimizerWithFloat16Params` with its grad
buffers; that class cannot run on a CPU (it accepts only parameters whose `param.type()` is
`torch.cuda.BFloat16Tensor` and raises TypeError on others), so bar keeps the same numerics
here, on any device.

Over data-parallel replicas the optimizer is distributed, as Megatron-Core's
`DistributedOptimizer` is (which needs its DistributedDataParallel's grad buffers and CUDA
streams, so cannot run on a CPU either): the gradients are summed over the replicas, and each
replica keeps the main weights and AdamW moments of its share of the parameters only (whole
tensors, balanced by size), steps them, and hands the new values to the others. AdamW works
element by element, so the weights are those of one replica stepping every tensor.
"""

from __future__ import annotations

import torch

from bar import parallel
from bar.specs import OptimSpec

_TP_ATTRIBUTES = ("tensor_model_parallel", "partition_dim", "partition_stride")


def owners(sizes: dict[str, int], replicas: int) -> dict[str, int]:
    """The replica that steps each tensor: the largest first, each to the least loaded (ties: the lowest)."""
    load, out = [0] * replicas, {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        r = load.index(min(load))
        out[name] = r
        load[r] += sizes[name]
    return out


class Optimizer:
    def __init__(self, model, optim: OptimSpec, lr_scale: dict[str, float] | None = None):
        """AdamW over the parameters of `model` that require grad. `lr_scale` multiplies the
        learning rate of named parameter groups (`bar.model.moe.group_of`); see `set_lr`."""
        from bar.model.moe import group_of

        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.owner = owners({n: p.numel() for n, p in self.params.items()}, parallel.dp_size())
        mine = {n for n, r in self.owner.items() if r == parallel.dp_rank()}
        # Main weights of this replica's share (all of them with one replica), in the model's order.
        self.main = {name: self._main_of(p, name in mine) for name, p in self.params.items() if name in mine}
        for name, p in self.params.items():
            if name not in mine:
                self._main_of(p, False)
        groups: dict[tuple[float, float], list[torch.Tensor]] = {}
        for name, main in self.main.items():
            scale = lr_scale.get(group_of(name), 1.0) if lr_scale else 1.0
            # Weight decay on matrices only (not on norms), as in GPT-2/Llama recipes.
            decay = optim.weight_decay if main.ndim >= 2 else 0.0
            groups.setdefault((scale, decay), []).append(main)
        # The fused kernel (CPU and CUDA): one pass over each tensor instead of a dozen; on this
        # machine's CPU a step of the default model's optimizer runs several times faster.
        self.adamw = (
            torch.optim.AdamW(
                [{"params": ps, "weight_decay": decay, "lr_scale": scale} for (scale, decay), ps in groups.items()],
                lr=optim.lr,
                betas=optim.betas,
                fused=True,
            )
            if groups
            else None
        )
        self._copies = [(p, self.main[n]) for n, p in self.params.items() if n in self.main and self.main[n] is not p]
        # Weights each rank computes on its slice of the sequence (norms, routers; `bar.model.norms`).
        self._sequence_parallel = [n for n, p in self.params.items() if getattr(p, "sequence_parallel", False)]

    @staticmethod
    def _main_of(p: torch.nn.Parameter, mine: bool) -> torch.Tensor | None:
        """The main weight of `p` if this replica steps it; a bf16 parameter's gradient
        accumulates in fp32 either way (into the main weight's, or into `p.main_grad`)."""
        if p.dtype == torch.float32:
            return p if mine else None
        main = None
        if mine:
            main = p.detach().float().clone()
            for attr in _TP_ATTRIBUTES:
                if hasattr(p, attr):
                    setattr(main, attr, getattr(p, attr))
        p.main_param = main  # a later optimizer of the same model (the next phase) takes it over
        if not getattr(p, "_accumulates_into_main", False):
            p.register_post_accumulate_grad_hook(_accumulate)
            p._accumulates_into_main = True
        return main

    def _grad(self, name: str) -> torch.Tensor | None:
        """The fp32 gradient of parameter `name` (None: no backward pass reached it)."""
        p = self.params[name]
        if p.dtype == torch.float32:
            return p.grad
        main = self.main.get(name)
        return main.grad if main is not None else getattr(p, "main_grad", None)

    def _set_grad(self, name: str, grad: torch.Tensor) -> None:
        p = self.params[name]
        if p.dtype == torch.float32:
            p.grad = grad
        elif name in self.main:
            self.main[name].grad = grad
        else:
            p.main_grad = grad

    def set_lr(self, lr: float) -> None:
        for group in self.adamw.param_groups if self.adamw else []:
            group["lr"] = lr * group["lr_scale"]

    def zero_grad(self) -> None:
        for name, p in self.params.items():
            p.grad = None
            p.main_grad = None
            if name in self.main:
                self.main[name].grad = None

    def _summed(self, names: list[str], over) -> None:
        """Sum the gradients of `names` with `over` (a `bar.parallel` sum), zeros where a rank has none."""
        for n in names:
            if self._grad(n) is None:
                self._set_grad(n, torch.zeros_like(self.params[n], dtype=torch.float32))
        over([self._grad(n) for n in names])

    @torch.no_grad()
    def step(self, max_norm: float = 0.0) -> float:
        """Sum the gradients of sequence-parallel weights over the tensor-parallel ranks and every
        gradient over the data-parallel replicas, clip them to `max_norm` (0: no clipping), take an
        AdamW step of this replica's share and write the main weights back into the model, every
        replica's share on every replica; returns the gradients' global norm before clipping."""
        if self._sequence_parallel and parallel.tp_size() > 1:
            self._summed(self._sequence_parallel, parallel.sum_over_tp)
        replicas = parallel.dp_size()
        if replicas > 1:
            self._summed(list(self.params), parallel.sum_over_replicas)
        grads = [(self.params[n], g) for n in self.params if (g := self._grad(n)) is not None]
        norm = parallel.clip_grad_norm(grads, max_norm)
        if self.adamw:
            self.adamw.step()
        if self._copies:
            torch._foreach_copy_([p for p, _ in self._copies], [m for _, m in self._copies])
        for r in range(replicas if replicas > 1 else 0):
            parallel.broadcast_replica([p.data for n, p in self.params.items() if self.owner[n] == r], r)
        return norm

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """AdamW's moments and step and, for a model in bf16, the fp32 main weights: full tensors in
        host memory, named after the model's parameters, on every replica (collective under tensor
        and data parallelism)."""
        out = {}
        for name, p in self.params.items():
            if name in self.main:
                main = self.main[name]
                if st := self.adamw.state.get(main):
                    out[f"{name}.exp_avg"] = parallel.full_tensor(p, st["exp_avg"]).contiguous().cpu()
                    out[f"{name}.exp_avg_sq"] = parallel.full_tensor(p, st["exp_avg_sq"]).contiguous().cpu()
                    out[f"{name}.step"] = st["step"].detach().clone().reshape(1).cpu()
                if main is not p:
                    out[f"{name}.main"] = parallel.full_tensor(p, main).contiguous().cpu()
        if parallel.dp_size() > 1:  # each replica holds its share: every replica gathers all of it
            shares = [None] * parallel.dp_size()
            torch.distributed.all_gather_object(shares, out, group=parallel.dp_group())
            out = {k: v for share in shares for k, v in share.items()}
            out = {f"{n}.{kind}": out[f"{n}.{kind}"] for n in self.params for kind in _KINDS if f"{n}.{kind}" in out}
        return out

    @torch.no_grad()
    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """The inverse of `state_tensors` (full tensors; this rank takes its shards of its replica's share)."""
        for name, p in self.params.items():
            if name not in self.main:
                continue
            main = self.main[name]
            if main is not p and f"{name}.main" in state:
                main.copy_(parallel.local_shard(p, state[f"{name}.main"]))
            if f"{name}.step" in state:
                self.adamw.state[main] = {
                    "step": state[f"{name}.step"].reshape(()).to(main.device, copy=True),  # fused AdamW: on the device
                    "exp_avg": parallel.local_shard(p, state[f"{name}.exp_avg"]).to(main.device, copy=True),
                    "exp_avg_sq": parallel.local_shard(p, state[f"{name}.exp_avg_sq"]).to(main.device, copy=True),
                }


_KINDS = ("exp_avg", "exp_avg_sq", "step", "main")


def _accumulate(param: torch.Tensor) -> None:
    """Add a bf16 parameter's new gradient into its fp32 gradient: its main weight's, or, where
    another replica steps it, its own `main_grad`."""
    main = param.main_param
    if main is not None:
        main.grad = param.grad.float() if main.grad is None else main.grad.add_(param.grad)
    else:
        param.main_grad = (
            param.grad.float() if getattr(param, "main_grad", None) is None else param.main_grad.add_(param.grad)
        )
    param.grad = None

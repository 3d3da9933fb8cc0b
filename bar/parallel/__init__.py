"""How the model is parallelised and launched: process groups, tensor-parallel shards.

Everything here works on tensors by their Megatron-Core tensor-parallel attributes
(`tensor_model_parallel`, `partition_dim`, `partition_stride`), so the model code never
needs to know about ranks, and checkpoints hold full (unsharded) tensors that load at any
tensor-parallel size.
"""

import ctypes
import os
import signal
import sys
import warnings

import torch
import torch.distributed as dist

# Megatron-Core's warnings that say nothing to a bar user (7 in every training stage): bar uses
# neither Transformer Engine nor Apex nor Megatron's optimizers, and never sets cuda_graph_scope
# (the deprecation is of Megatron's own default). Filtered by message; any other warning shows.
MEGATRON_NOTICES = (
    r"Transformer Engine and Apex are not installed\. Falling back to ",
    r"Apex is not installed\. Falling back to Torch Norm",
    r"full scope is deprecated\. Use empty cuda_graph_scope",
)


def init(tp_size: int, seed: int, dp_size: int = 1) -> None:
    """Start the process group and Megatron-Core's model-parallel state in a torchrun worker:
    tp_size x dp_size processes, tensor-parallel groups of consecutive ranks (Megatron-Core's
    order), each a data-parallel replica; or, in a process torchrun did not start (a stage of one
    process, a test, a tool), a group of one."""
    from bar import launch
    from bar.parallel import cpu

    for message in MEGATRON_NOTICES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning, module="megatron")
    cpu.import_megatron()
    from megatron.core import parallel_state, tensor_parallel

    _die_with_launcher()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != tp_size * dp_size:
        raise RuntimeError(
            f"launched {world_size} processes for tp_size={tp_size} x dp_size={dp_size}: launch "
            f"{tp_size * dp_size} in all (bar.launch does this)"
        )
    cpu.apply()
    if torch.cuda.is_available():  # before the process group: nccl binds each rank to its device
        torch.cuda.set_device(device())
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "RANK" in os.environ:
            dist.init_process_group(backend)
        else:  # a process of its own (a stage of one process, tests, tools): a group of one
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", world_size=1, rank=0)
    if not torch.cuda.is_available():
        # The cores are shared by the ranks on this machine: one thread per core in total, unless
        # OMP_NUM_THREADS says otherwise (e.g. 1 each when two jobs share the machine: more
        # threads than cores spin-wait and run several times slower).
        torch.set_num_threads(launch.threads_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp_size)
    # No dropout and CPU initialisation: the no-op RNG tracker is all Megatron needs.
    tensor_parallel.model_parallel_cuda_manual_seed(seed, inference_rng_tracker=True)
    # Every rank seeds its CPU generator alike so the master weights it builds (and then
    # slices its shard from) are the same on every rank and at every tp_size.
    torch.manual_seed(seed)


def _die_with_launcher() -> None:
    """torchrun starts each worker in a session of its own, so killing the launcher (or the
    `dvc repro` above it) would leave workers training on, and writing checkpoints, as
    orphans. Ask Linux to kill this worker when its launcher dies."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != launcher:  # it died before the request took effect
        os._exit(1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shutdown() -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def device() -> torch.device:
    """This rank's device: the GPU of its local rank when there are GPUs, else the CPU. Every
    tensor the model, batches, masks, caches and optimizer create lives there."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def tp_size() -> int:
    return _tp()[2]


def tp_rank() -> int:
    return _tp()[1]


def _dp():
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None, 0, 1
    group = parallel_state.get_data_parallel_group()
    return group, dist.get_rank(group), dist.get_world_size(group)


def dp_group():
    return _dp()[0]


def dp_rank() -> int:
    return _dp()[1]


def dp_size() -> int:
    return _dp()[2]


def sum_over_replicas(tensors: list[torch.Tensor]) -> None:
    """Sum `tensors` (gradients, in fp32) over the data-parallel replicas, in place: one
    all-reduce of a flat buffer. Megatron-Core's DistributedDataParallel does this with grad
    buffers and CUDA streams it creates on `torch.cuda.current_device()`, so it cannot run on a
    CPU; the sum is the same."""
    _sum(tensors, *_dp()[::2])


def gather_replicas(t: torch.Tensor) -> torch.Tensor:
    """The data-parallel replicas' `t` concatenated along dim 0, in replica order."""
    group, _, size = _dp()
    if size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts)


def sum_over_tp(tensors: list[torch.Tensor]) -> None:
    """Sum `tensors` over the tensor-parallel ranks, in place (the gradients of weights that
    sequence parallelism gives each rank a slice of the sequence for: Megatron-Core's
    `finalize_model_grads` does this for its DistributedDataParallel)."""
    _sum(tensors, *_tp()[::2])


def _sum(tensors: list[torch.Tensor], group, size: int) -> None:
    if size == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, group=group)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def _tp():
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None, 0, 1
    group = parallel_state.get_tensor_model_parallel_group()
    return group, dist.get_rank(group), dist.get_world_size(group)


def is_sharded(param: torch.Tensor) -> bool:
    return bool(getattr(param, "tensor_model_parallel", False)) and _tp()[2] > 1


def full_tensor(param: torch.Tensor, local: torch.Tensor | None = None) -> torch.Tensor:
    """The unsharded value of `local` (default: the parameter itself), a tensor sharded like `param`.

    A shard with partition_stride s holds s interleaved chunks (e.g. SwiGLU's fc1 holds
    [gate_r; up_r]), so the full tensor is chunk j of every rank, for j in 0..s-1.
    """
    local = (param if local is None else local).detach()
    if not is_sharded(param):
        return local.clone()
    group, _, size = _tp()
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.contiguous(), group=group)
    dim, stride = param.partition_dim, param.partition_stride
    chunks = [p.chunk(stride, dim) for p in parts]
    return torch.cat([chunks[r][j] for j in range(stride) for r in range(size)], dim)


def local_shard(param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `full`, the inverse of `full_tensor`."""
    if not is_sharded(param):
        return full
    _, tp_rank, size = _tp()
    dim, stride = param.partition_dim, param.partition_stride
    chunks = full.chunk(stride * size, dim)
    return torch.cat([chunks[j * size + tp_rank] for j in range(stride)], dim).contiguous()


def grad_norm(grads: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Global L2 norm of the gradients ((parameter, its gradient) pairs), counting each
    tensor-parallel shard once."""
    sharded = torch.zeros((), dtype=torch.float64, device=device())
    replicated = torch.zeros((), dtype=torch.float64, device=device())
    for p, g in grads:
        sq = g.detach().double().pow(2).sum()
        if is_sharded(p):
            sharded += sq
        else:
            replicated += sq
    group, _, size = _tp()
    if size > 1:
        dist.all_reduce(sharded, group=group)
    return (sharded + replicated).sqrt()


def clip_grad_norm(grads: list[tuple[torch.Tensor, torch.Tensor]], max_norm: float) -> float:
    """Scale the gradients ((parameter, gradient) pairs) in place to a global norm of at most
    `max_norm` (0: leave them); returns their norm before."""
    norm = grad_norm(grads)
    if max_norm > 0:
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0).to(torch.float32)
        for _, g in grads:
            g.mul_(scale)
    return float(norm)


def broadcast_replica(tensors: list[torch.Tensor], src: int) -> None:
    """Data-parallel replica `src`'s values of `tensors`, in place on every replica (one flat broadcast)."""
    group, _, size = _dp()
    if size == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.broadcast(flat, src=dist.get_global_rank(group, src), group=group)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def broadcast_object(obj):
    """Rank 0's value of a picklable object, on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]

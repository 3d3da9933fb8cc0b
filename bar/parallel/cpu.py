"""Work-arounds for Megatron-Core code paths that assume a CUDA device.

Megatron-Core 0.16.1 runs on CPU with the gloo backend except for a few places that
hard-code CUDA. Each patch below names the upstream code path it covers. They are applied
only when no CUDA device is present (`apply()` is a no-op on a GPU machine), and
tests/parallel/test_cpu.py fails if one stops being needed or stops working after an upgrade.

Code paths we avoid instead of patching (so there is nothing to patch):
- the CUDA causal mask of `transformer/utils.py::get_default_causal_mask`: our core attention
  (`bar.model.attention.SDPAttention`) builds its own masks;
- the CUDA RNG tracker: weights are initialised on CPU (`use_cpu_initialization=True`) and the
  model has no dropout, so `model_parallel_cuda_manual_seed(..., inference_rng_tracker=True)`
  installs the no-op tracker and nothing forks CUDA generator state;
- the alltoall token dispatcher's CUDA stream: MoE layers use the `allgather` dispatcher;
- `dist_checkpointing`'s CUDA synchronise: checkpoints are our own safetensors files.
"""

import sys

import torch

_applied = False


def import_megatron() -> None:
    """Import Megatron-Core; on CPU, without the torch.compile of its fused kernels (patch 3)."""
    if "megatron.core" in sys.modules or not needed():
        import megatron.core  # noqa: F401

        return
    # 3. Megatron-Core wraps its fused kernels in torch.compile when a module is imported
    #    (megatron/core/jit.py: `jit_fuser`, and a few direct decorators). Each call imports
    #    TorchInductor, 2.3 s of every process that imports Megatron-Core, and the one our models
    #    call, transformer/moe/router.py::TopKRouter._apply_expert_bias (a no-op without expert
    #    bias), is traced by TorchDynamo in every process. None is worth compiling on CPU: the
    #    package is imported with torch.compile as the identity, and `jit_fuser` is left the
    #    no-op decorator for the modules imported later. Results are bit-identical.
    compile_ = torch.compile
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    try:
        from megatron.core import jit

        jit.disable_jit_fuser()
    finally:
        torch.compile = compile_


def needed() -> bool:
    return not torch.cuda.is_available()


def apply() -> None:
    global _applied
    if _applied or not needed():
        return

    # 1. `torch.cuda.current_device()` is the device argument of buffers allocated during
    #    forward/backward all over Megatron-Core: tensor_parallel/mappings.py (all-gather
    #    buffers), tensor_parallel/layers.py, models/common/embeddings/rotary_pos_embedding.py,
    #    transformer/moe/router.py (moves the router weight "to GPU"), moe/experts.py.
    #    Without CUDA it raises; pointing it at the CPU keeps every such tensor on the CPU.
    torch.cuda.current_device = lambda: torch.device("cpu")

    # 2. transformer/moe/moe_utils.py::router_gating_linear tests `te_general_gemm is not None`,
    #    but the name is only bound when TransformerEngine imports: NameError without TE.
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None

    # 4. Activation recomputation (tensor_parallel/random.py::CheckpointFunction) saves and restores
    #    the CUDA generator's state around each recomputed layer (`_get_all_rng_states`, `_fork_rng`)
    #    through `_get_cuda_rng_state`/`_set_cuda_rng_state`, which call torch.cuda. On the CPU the
    #    generator to keep is the CPU's (bar's models have no dropout, so nothing draws from it).
    from megatron.core.tensor_parallel import random

    random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    random._set_cuda_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)

    _applied = True

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

import torch

_applied = False


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

    _applied = True

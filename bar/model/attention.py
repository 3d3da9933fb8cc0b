"""Core attention through `torch.nn.functional.scaled_dot_product_attention`.

Megatron-Core's local `DotProductAttention` materialises the score matrix with baddbmm and a
separate softmax, and builds its default causal mask on a CUDA device. On CPU this module is
both faster (SDPA's fused kernels; same results within float tolerance) and device-free. It
is a drop-in `core_attention` submodule of the local layer spec.

`CachedRopeSelfAttention` rotates each key once, when it enters the key/value cache.
Megatron-Core's static inference cache stores keys unrotated and re-applies RoPE to the whole
cache at every decoding step (quadratic in the length; measured: nearly half of a rollout's
time on CPU). The rotation is the same, at the same positions, once instead of every step.

Masks follow Megatron's convention: `attention_mask` is boolean, True = masked out,
broadcastable to [batch, heads, q, k]. Without a mask, attention is causal when queries
and keys cover the same positions, and unmasked when a single new query attends to a
key/value cache. Packed training rows pass their document ids instead ([batch, seq] integers,
`bar.train.batches`): each document attends causally to itself only, one SDPA call per
document, so memory grows with the sequence length, not with its square as a [batch, 1, seq,
seq] mask does. A sliding-window layer (`window`) also masks keys more than `window` - 1 positions
back (a document longer than the window gets a band mask of its own).
"""

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
from megatron.core.transformer.attention import SelfAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule


class SDPAttention(MegatronModule):
    def __init__(
        self,
        config,
        layer_number,
        attn_mask_type,
        attention_type,
        attention_dropout=None,
        softmax_scale=None,
        cp_comm_type=None,
        pg_collection=None,
        window=None,
    ):
        super().__init__(config=config)
        self.window = window  # a sliding-window layer: each query sees this many keys, itself included
        tp_size = (
            pg_collection.tp.size()
            if pg_collection is not None
            else parallel_state.get_tensor_model_parallel_world_size()
        )
        self.num_heads = config.num_attention_heads // tp_size
        self.num_groups = config.num_query_groups // tp_size
        self.attn_mask_type = attn_mask_type
        self.softmax_scale = softmax_scale

    def forward(
        self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, packed_seq_params=None
    ):
        assert attention_bias is None and packed_seq_params is None
        # [s, b, heads, head_dim] -> [b, heads, s, head_dim]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if attention_mask is not None and not attention_mask.dtype == torch.bool:
            out = self._per_document(q, k, v, attention_mask)
            s, b = out.size(2), out.size(0)
            return out.permute(2, 0, 1, 3).reshape(s, b, -1)
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        is_causal = attention_mask is None and mask_type == AttnMaskType.causal and q.size(2) == k.size(2)
        attend = None if attention_mask is None else ~attention_mask
        if self._slides(k.size(2)):
            band = self._band(q.size(2), k.size(2), q.device)
            attend, is_causal = band if attend is None else attend & band, False
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attend,
            is_causal=is_causal,
            scale=self.softmax_scale,
            enable_gqa=self.num_heads != self.num_groups,
        )
        # [b, heads, s, head_dim] -> [s, b, heads * head_dim]
        s, b = out.size(2), out.size(0)
        return out.permute(2, 0, 1, 3).reshape(s, b, -1)

    def _per_document(self, q, k, v, documents: torch.Tensor) -> torch.Tensor:
        """Causal attention within each run of equal document ids of each row ([b, heads, s, d])."""
        rows = []
        for i, ids in enumerate(documents.tolist()):
            starts = [0] + [t for t in range(1, len(ids)) if ids[t] != ids[t - 1]] + [len(ids)]
            rows.append(
                torch.cat(
                    [
                        F.scaled_dot_product_attention(
                            q[i : i + 1, :, a:b],
                            k[i : i + 1, :, a:b],
                            v[i : i + 1, :, a:b],
                            attn_mask=self._band(b - a, b - a, q.device) if self._slides(b - a) else None,
                            is_causal=not self._slides(b - a),
                            scale=self.softmax_scale,
                            enable_gqa=self.num_heads != self.num_groups,
                        )
                        for a, b in zip(starts, starts[1:])
                    ],
                    dim=2,
                )
            )
        return torch.cat(rows)

    def _slides(self, keys: int) -> bool:
        """Whether the window leaves out some of `keys` keys (the first, for the last query)."""
        return self.window is not None and keys > self.window

    def _band(self, queries: int, keys: int, device) -> torch.Tensor:
        """[queries, keys], True = attend: the queries are the last of the keys' positions, each
        sees itself and the window - 1 keys before it."""
        return sliding_band(queries, keys, self.window, device)


def sliding_band(queries: int, keys: int, window: int, device) -> torch.Tensor:
    """Causal sliding-window attention, True = attend, the queries at the last positions of the
    keys': key j is seen by the query at position i if i - window < j <= i (as transformers'
    sliding-window masks)."""
    q = torch.arange(keys - queries, keys, device=device)[:, None]
    k = torch.arange(keys, device=device)[None, :]
    return (k <= q) & (k > q - window)


class CachedRopeSelfAttention(SelfAttention):
    def _adjust_key_value_for_inference(self, inference_context, query, key, value, rotary_pos_emb, *args, **kwargs):
        if (
            inference_context is None
            or not inference_context.is_static_batching()
            or rotary_pos_emb is None
            or self.config.flash_decode
        ):
            return super()._adjust_key_value_for_inference(
                inference_context, query, key, value, rotary_pos_emb, *args, **kwargs
            )
        # Only the new keys, at their own positions; the cache then holds rotated keys.
        start = inference_context.sequence_len_offset
        k_pos_emb = rotary_pos_emb[1][start : start + key.size(0)]
        key = apply_rotary_pos_emb(key, k_pos_emb, config=self.config, cp_group=self.pg_collection.cp)
        query, key, value, rotary_pos_emb, mask_type, block_table = super()._adjust_key_value_for_inference(
            inference_context, query, key, value, rotary_pos_emb, *args, **kwargs
        )
        return query, key, value, (rotary_pos_emb[0], None), mask_type, block_table

"""Batched decoding with a key/value cache: RLVR rollouts and evaluation.

Prompts are left-padded to a common length; pad keys are masked out. RoPE depends only on
relative positions, so a left-padded row decodes as it would alone. The prompt is run once
(prefill), then each step feeds one token per row.

Without tensor parallelism (every expert, the routed model, evaluation) a small decoder runs
the Megatron-Core model's own parameters in plain PyTorch: per layer one fused QKV matmul,
the layer's own norm modules (where its family puts them), RoPE on the new keys only, a
preallocated cache, attention (SDPA for the prompt, two batched matmuls for one new query; a
sliding-window layer masks the keys its window leaves out),
and the MoE as Megatron-Core routes it (softmax over the top-k router logits, every expert's
FFN weighted by its probability). On this CPU it decodes 1.3-1.6x as fast as Megatron-Core's
modules, whose per-layer framework overhead it skips
(benchmarks/README.md); tests check both paths against recomputing the whole sequence with
the Megatron-Core model. Under tensor parallelism the decoding goes
through Megatron-Core's static inference context; every rank runs it in lockstep and, given
the same `generator` state, samples the same tokens. An MoE under tensor parallelism trains with
the sequence split over the ranks (sequence parallelism), which one new token a step cannot be:
decoding holds the whole sequence on every rank (`_whole_sequence`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


@torch.no_grad()
def generate(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    stop_ids: set[int],
    vocab_size: int,
    pad_id: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    sequence_topk: int | None = None,
    rows_of: tuple[int, int] | None = None,
) -> list[list[int]]:
    """New tokens for each prompt (ending with its stop token if one was produced).

    temperature 0 is greedy. `vocab_size` is the tokenizer's size: logits of the rows the
    model pads its vocabulary with are never chosen. `sequence_topk` (an MoE, TP=1): each
    sequence is served by the anchor and the k experts its router favours over the prompt
    (`_Decoder.choose`); None: every expert, token by token. `rows_of` (first, total): these
    prompts are rows first.. of a batch of `total` that `generator` samples for (a data-parallel
    replica's share, a micro-batch): each row draws what it would in the whole batch.
    """
    from bar import parallel

    was_training = model.training
    model.eval()
    device = parallel.device()
    tokens, pad, prompt_mask = _left_pad(prompts, pad_id, max_new_tokens, device)
    batch, prompt_len = tokens.shape
    if sequence_topk and parallel.tp_size() > 1:
        raise ValueError("sequence_topk decodes at TP=1 only (bar's own decoder)")
    first, total = rows_of or (0, batch)
    with _whole_sequence(model):
        decoder = (
            _Decoder(model, batch, prompt_len + max_new_tokens)
            if parallel.tp_size() == 1
            else _MegatronDecoder(model, batch, prompt_len + max_new_tokens)
        )
        if sequence_topk:
            decoder.keep = decoder.choose(tokens, prompt_mask, sequence_topk)
        logits = decoder(tokens, prompt_mask)

        out = torch.empty(batch, max_new_tokens, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        stops = torch.tensor(sorted(stop_ids), device=device)
        for t in range(max_new_tokens):
            logits[:, vocab_size:] = float("-inf")
            if temperature > 0:
                # torch.multinomial's own draw (argmax of p / q, q ~ Exp(1) for each row and token),
                # for every row of the whole batch, on the generator's device (the CPU: every rank
                # draws the same tokens).
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                q = torch.empty(total, probs.size(1), dtype=probs.dtype, device="cpu").exponential_(
                    1, generator=generator
                )
                nxt = (probs / q[first : first + batch]).argmax(dim=-1).to(device)
            else:
                nxt = logits.argmax(dim=-1)
            nxt = torch.where(done, pad_id, nxt)
            out[:, t] = nxt
            done |= torch.isin(nxt, stops)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            cur = prompt_len + t + 1
            pad[:, cur - 1] = False  # finished rows feed pads too; what they compute is dropped
            logits = decoder(nxt[:, None], pad[:, None, None, :cur])

    model.train(was_training)
    results = []
    for row in out[:, : t + 1].tolist():
        n = next((i + 1 for i, tok in enumerate(row) if tok in stop_ids), len(row))
        results.append(row[:n])
    return results


@torch.no_grad()
def choose_experts(model, prompts: list[list[int]], *, sequence_topk: int, pad_id: int) -> torch.Tensor:
    """(prompts, slots) True where a slot serves the prompt when `generate` decodes it with
    `sequence_topk` (the anchor, slot 0, always). An MoE at TP=1."""
    return _prompt_pass(
        model, prompts, pad_id, lambda decoder, tokens, mask: decoder.choose(tokens, mask, sequence_topk)
    )


@torch.no_grad()
def expert_shares(model, prompts: list[list[int]], *, pad_id: int) -> torch.Tensor:
    """(prompts, slots) the mean router probability of each slot over the prompt's tokens and
    the layers: what `choose_experts` ranks the experts by. An MoE at TP=1."""
    return _prompt_pass(model, prompts, pad_id, lambda decoder, tokens, mask: decoder.shares_of(tokens, mask))


def _prompt_pass(model, prompts: list[list[int]], pad_id: int, run):
    from bar import parallel

    was_training = model.training
    model.eval()
    tokens, _, mask = _left_pad(prompts, pad_id, 0, parallel.device())
    result = run(_Decoder(model, *tokens.shape), tokens, mask)
    model.train(was_training)
    return result


def _left_pad(prompts: list[list[int]], pad_id: int, max_new_tokens: int, device: torch.device):
    """The prompts left-padded to one length, where there is no token (prompt and new tokens;
    True = none) and the prompt's attention mask (Megatron's: True = masked out)."""
    batch, prompt_len = len(prompts), max(len(p) for p in prompts)
    tokens = torch.full((batch, prompt_len), pad_id, dtype=torch.long, device=device)
    pad = torch.ones(batch, prompt_len + max_new_tokens, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i, prompt_len - len(p) :] = torch.tensor(p, device=device)
        pad[i, prompt_len - len(p) :] = False
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).triu(1)
    return tokens, pad, causal[None, None] | pad[:, None, None, :prompt_len]


_SEQUENCE_PARALLEL = ("sequence_parallel", "scatter_to_sequence_parallel", "reduce_scatter_embeddings")


@contextmanager
def _whole_sequence(model):
    """Every rank holds the whole sequence while decoding an MoE that trains sequence-parallel.

    Megatron-Core's inference path refuses sequence parallelism without expert parallelism
    (`TextGenerationController`), and one new token a step cannot be split. Its all-gather MoE
    dispatcher needs no change: it gathers the ranks' (now identical) tokens, each rank's experts
    compute their share of every copy, and the reduce-scatter hands each rank its own copy back,
    summed over the shards (the experts compute a step's few tokens tp times over)."""
    if not model.config.sequence_parallel:
        yield
        return
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}.values()
    saved = [(m, a, getattr(m, a)) for m in model.modules() for a in _SEQUENCE_PARALLEL if hasattr(m, a)]
    saved += [(c, "sequence_parallel", c.sequence_parallel) for c in configs]
    try:
        for m, a, _ in saved:
            setattr(m, a, False)
        yield
    finally:
        for m, a, value in saved:
            setattr(m, a, value)


class _MegatronDecoder:
    """Megatron-Core's own inference path (`StaticInferenceContext`), for any TP size."""

    def __init__(self, model, batch: int, max_len: int):
        from megatron.core.inference.contexts import StaticInferenceContext

        self.model, self.context = model, StaticInferenceContext(batch, max_len)

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(tokens, None, mask, inference_context=self.context, runtime_gather_output=True)
        self.context.sequence_len_offset += tokens.size(1)
        return logits[:, -1, :].float()


class _Decoder:
    """The model's forward pass in plain PyTorch on its own (unsharded) parameters, with a
    preallocated key/value cache. `mask` is Megatron's: True = masked out."""

    def __init__(self, model, batch: int, max_len: int):
        cfg = model.config
        self.heads, self.groups, self.head_dim = cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels
        self.eps, self.topk = cfg.layernorm_epsilon, cfg.moe_router_topk
        self.embedding = model.embedding.word_embeddings.weight
        self.final_norm, self.output = model.decoder.final_layernorm.weight, model.output_layer.weight
        self.layers = model.decoder.layers
        self.windows = [layer.self_attention.core_attention.window for layer in self.layers]  # sliding or None
        dtype, device = self.embedding.dtype, self.embedding.device
        inv_freq = model.rotary_pos_emb.inv_freq.float().to(device)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32, device=device), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        # As Megatron-Core applies RoPE: angles in float32, their cos and sin in the model's dtype.
        self.cos, self.sin = angles.cos().to(dtype), angles.sin().to(dtype)
        shape = (len(self.layers), batch, self.groups, max_len, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.offset = 0
        self.keep: torch.Tensor | None = None  # (batch, slots): the experts each sequence may use
        self.shares: list[torch.Tensor] | None = None  # while choosing: each layer's mean router probability

    def choose(self, tokens: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor | None:
        """Which experts serve each sequence: the anchor (slot 0) and the k others with the most
        router probability over the prompt's tokens (mean over tokens and layers), from a pass of
        the prompt with every expert active (the DEMix way of choosing domain experts, with the
        fitted router as the domain posterior)."""
        shares = self.shares_of(tokens, mask)
        if shares is None:  # a dense model: nothing to choose
            return None
        shares[:, 0] = float("-inf")
        keep = torch.zeros_like(shares, dtype=torch.bool)
        keep[:, 0] = True
        return keep.scatter(1, shares.topk(min(k, shares.size(1) - 1), dim=-1).indices, True)

    def shares_of(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """(batch, slots) each slot's router probability, mean over the prompt's tokens and the
        layers, from a pass with every expert active (None for a dense model). Resets the cache."""
        real = ~torch.diagonal(mask[:, 0], dim1=-2, dim2=-1)  # (batch, tokens): not padding
        self.shares, self.real = [], real.float()[..., None]
        self(tokens, mask)
        layers, self.shares, self.offset = self.shares, None, 0
        return torch.stack(layers).mean(0) if layers else None

    def _rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        cos, sin = self.cos[start : start + x.size(2)], self.sin[start : start + x.size(2)]
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def _attention(self, q, k, v, attend: torch.Tensor) -> torch.Tensor:
        if q.size(2) > 1:  # prefill
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attend, enable_gqa=self.heads != self.groups)
        # One query per row: two batched matmuls beat SDPA's kernel at this size on CPU
        # (measured 134 vs 190 us per layer at 64 rows x 60 keys).
        b, _, _, d = q.shape
        scores = (q.view(b, self.groups, -1, d) @ k.transpose(-1, -2)) * d**-0.5
        probs = torch.softmax(scores.masked_fill(~attend.view(b, 1, 1, -1), float("-inf")), dim=-1)
        return (probs @ v).view(b, self.heads, 1, d)

    def _mlp(self, mlp, h: torch.Tensor) -> torch.Tensor:
        if not hasattr(mlp, "router"):
            return _swiglu(h, mlp.linear_fc1.weight, mlp.linear_fc2.weight)
        experts = mlp.experts.local_experts
        logits = F.linear(h.float(), mlp.router.weight.float())  # in fp32, as moe_router_dtype says
        if self.keep is not None:  # the sequence's experts only: the softmax over their logits
            logits = logits.masked_fill(~self.keep[:, None, :], float("-inf"))
        if self.topk < len(experts):  # softmax over the top-k logits, the others weigh 0
            top, idx = logits.topk(self.topk, dim=-1)
            probs = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, dim=-1))
        else:
            probs = torch.softmax(logits, dim=-1)
        if self.shares is not None:
            self.shares.append((probs * self.real).sum(1) / self.real.sum(1))
        out = torch.zeros_like(h)
        for e, expert in enumerate(experts):
            out += probs[..., e : e + 1] * _swiglu(h, expert.linear_fc1.weight, expert.linear_fc2.weight)
        return out

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from bar.model.attention import sliding_band
        from bar.model.norms import PostNormLayer

        b, t = tokens.shape
        start, end = self.offset, self.offset + t
        x = F.embedding(tokens, self.embedding)
        attend = ~mask  # SDPA: True = attend
        bands = {w: attend & sliding_band(t, end, w, x.device) for w in set(self.windows) if w and end > w}
        per_group = self.heads // self.groups
        for i, layer in enumerate(self.layers):
            attn = layer.self_attention
            # Identities where the family has no norm (bar.model.layer_spec).
            h = layer.input_layernorm(x)
            qkv = F.linear(h, attn.linear_qkv.weight).view(b, t, self.groups, per_group + 2, self.head_dim)
            q = attn.q_layernorm(qkv[:, :, :, :per_group].reshape(b, t, self.heads, self.head_dim)).transpose(1, 2)
            k = attn.k_layernorm(qkv[:, :, :, per_group]).transpose(1, 2)
            v = qkv[:, :, :, per_group + 1].transpose(1, 2)
            self.keys[i, :, :, start:end] = self._rotate(k, start)
            self.values[i, :, :, start:end] = v
            keys, values = self.keys[i, :, :, :end], self.values[i, :, :, :end]
            o = self._attention(self._rotate(q, start), keys, values, bands.get(self.windows[i], attend))
            o = F.linear(o.transpose(1, 2).reshape(b, t, -1), attn.linear_proj.weight)
            post = isinstance(layer, PostNormLayer)
            x = x + (layer.post_self_attn_layernorm(o) if post else o)
            o = self._mlp(layer.mlp, layer.pre_mlp_layernorm(x))
            x = x + (layer.post_mlp_layernorm(o) if post else o)
        self.offset = end
        x = F.rms_norm(x[:, -1], (x.size(-1),), self.final_norm, self.eps)
        return F.linear(x, self.output).float()


def _swiglu(h: torch.Tensor, fc1: torch.Tensor, fc2: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(h, fc1).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, fc2)

"""bar's routed model for `transformers`, shipped beside an export whose config sets
`sequence_topk` (`specs/router.yaml`): the family's MoE class (Mixtral: `BarMoeForCausalLM`,
FlexOlmo: `BarFlexOlmoForCausalLM`, Qwen3-MoE: `BarQwen3MoeForCausalLM`; Olmo 3, which transformers
has no MoE class for: `BarOlmo3MoeForCausalLM`, per token too) whose every sequence is served by the anchor
(expert 0) and the `sequence_topk` experts its router favours over the prompt (the mean router
probability over the prompt's tokens and the layers, every expert active), each token routed
over those only, as `bar.generate` decodes. Load it with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`; without that flag
`transformers` loads the plain MoE class, which routes every expert per token.

Tested with `transformers` 5.23.0 (bar's pin) to 5.25.0 (`TESTED_TRANSFORMERS`); loading it
under another minor release warns. `transformers` 5.24 renamed the key/value cache argument of
the models' `forward` from `past_key_values` to `cache` (`generate` passes `cache=`): this class
reads the cache whatever its argument is called, as the `Cache` among the arguments.

This file is copied into exports and imported by `transformers` from there: it imports nothing
of bar's."""

import warnings

import torch
import transformers
from packaging.version import Version
from transformers import FlexOlmoForCausalLM, MixtralForCausalLM, Olmo3ForCausalLM, Qwen3MoeForCausalLM
from transformers.cache_utils import Cache
from transformers.models.flex_olmo.modeling_flex_olmo import FlexOlmoSparseMoeBlock

TESTED_TRANSFORMERS = ("5.23.0", "5.25.0")  # the oldest and the newest release this file is tested with


def past_length(kwargs: dict) -> int:
    """Tokens already in the key/value cache passed to `forward`, 0 without one: the cache is
    the `Cache` among the keyword arguments (`past_key_values` until transformers 5.23, `cache`
    since 5.24)."""
    return max((v.get_seq_length() for v in kwargs.values() if isinstance(v, Cache)), default=0)


class SequenceRouting:
    """Experts chosen per sequence, over an MoE class whose layers' `mlp.gate` returns (logits,
    top-k weights, top-k indices)."""

    def __init__(self, config):
        super().__init__(config)
        low, high = (Version(v).release[:2] for v in TESTED_TRANSFORMERS)
        if not low <= Version(transformers.__version__).release[:2] <= high:
            warnings.warn(
                f"{type(self).__name__} is tested with transformers {TESTED_TRANSFORMERS[0]} to "
                f"{TESTED_TRANSFORMERS[1]}, not {transformers.__version__}: check that greedy "
                "generate still matches bar's decoding",
                stacklevel=2,
            )
        self.keep = None  # (batch, experts): which experts serve each sequence
        for layer in self.model.layers:
            layer.mlp.gate.register_forward_hook(self._route)

    def _route(self, gate, args, out):
        """The softmax over the sequence's experts only (the others weigh 0)."""
        if self.keep is None:
            return out
        logits = out[0]
        keep = self.keep.repeat_interleave(logits.size(0) // self.keep.size(0), dim=0)
        logits = logits.masked_fill(~keep, float("-inf"))
        weights, index = torch.softmax(logits.float(), dim=-1).topk(gate.top_k, dim=-1)
        return logits, weights / weights.sum(dim=-1, keepdim=True), index

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        """The experts are chosen on the prompt's pass: the one with an empty cache (or none).
        The other arguments pass through untouched, under their names."""
        k = getattr(self.config, "sequence_topk", None)
        if k and input_ids is not None and past_length(kwargs) == 0:
            self.keep = self.choose(input_ids, attention_mask, kwargs.get("position_ids"), k)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @torch.no_grad()
    def choose(self, input_ids, attention_mask, position_ids, k: int) -> torch.Tensor:
        """The anchor (slot 0) and the k other experts with the most mean router probability."""
        mean = self.shares(input_ids, attention_mask, position_ids)
        mean[:, 0] = float("-inf")
        keep = torch.zeros_like(mean, dtype=torch.bool)
        keep[:, 0] = True
        return keep.scatter(1, mean.topk(min(k, mean.size(1) - 1), dim=-1).indices, True)

    @torch.no_grad()
    def shares(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        """(batch, experts) each expert's router probability, mean over the prompt's tokens and
        the layers, from a pass with every expert active."""
        real = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).float()[..., None]
        shares = []

        def record(gate, args, out):
            probs = torch.softmax(out[0].float(), dim=-1).view(*input_ids.shape, -1)
            shares.append((probs * real).sum(1) / real.sum(1))

        self.keep = None
        hooks = [layer.mlp.gate.register_forward_hook(record) for layer in self.model.layers]
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        return torch.stack(shares).mean(0)


class BarMoeForCausalLM(SequenceRouting, MixtralForCausalLM):
    pass


class BarFlexOlmoForCausalLM(SequenceRouting, FlexOlmoForCausalLM):
    pass


class BarQwen3MoeForCausalLM(SequenceRouting, Qwen3MoeForCausalLM):
    pass


class Olmo3MoeForCausalLM(Olmo3ForCausalLM):
    """Olmo 3 (its sliding-window layers) with FlexOlmo's MoE block as every layer's FFN: an Olmo 3
    expert or routed model, which transformers has no class for (FlexOlmo has no sliding window).
    The tensors are named as FlexOlmo's."""

    def __init__(self, config):
        super().__init__(config)
        for layer in self.model.layers:
            layer.mlp = FlexOlmoSparseMoeBlock(config)
        self.post_init()


class BarOlmo3MoeForCausalLM(SequenceRouting, Olmo3MoeForCausalLM):
    pass

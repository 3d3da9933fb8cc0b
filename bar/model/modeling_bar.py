"""bar's routed model for `transformers`, shipped beside an export whose config sets
`sequence_topk` (`specs/router.yaml`): a Mixtral whose every sequence is served by the anchor
(expert 0) and the `sequence_topk` experts its router favours over the prompt (the mean router
probability over the prompt's tokens and the layers, every expert active), each token routed
over those only, as `bar.generate` decodes. Load it with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`; without that flag
`transformers` loads a plain Mixtral, which routes every expert per token.

This file is copied into exports and imported by `transformers` from there: it imports nothing
of bar's."""

import torch
from transformers import MixtralForCausalLM


class BarMoeForCausalLM(MixtralForCausalLM):
    def __init__(self, config):
        super().__init__(config)
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

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, **kwargs):
        k = getattr(self.config, "sequence_topk", None)
        if k and input_ids is not None and (past_key_values is None or past_key_values.get_seq_length() == 0):
            self.keep = self.choose(input_ids, attention_mask, kwargs.get("position_ids"), k)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                               past_key_values=past_key_values, **kwargs)

    @torch.no_grad()
    def choose(self, input_ids, attention_mask, position_ids, k: int) -> torch.Tensor:
        real = (attention_mask if attention_mask is not None else torch.ones_like(input_ids)).float()[..., None]
        shares = []

        def record(gate, args, out):
            probs = torch.softmax(out[0].float(), dim=-1).view(*input_ids.shape, -1)
            shares.append((probs * real).sum(1) / real.sum(1))

        self.keep = None
        hooks = [layer.mlp.gate.register_forward_hook(record) for layer in self.model.layers]
        try:
            self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        mean = torch.stack(shares).mean(0)
        mean[:, 0] = float("-inf")
        keep = torch.zeros_like(mean, dtype=torch.bool)
        keep[:, 0] = True
        return keep.scatter(1, mean.topk(min(k, mean.size(1) - 1), dim=-1).indices, True)

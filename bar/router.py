"""The router of the merged MoE: what it is fitted on and with, and where it sends tokens.

Fitting (fit_router): a stratified sample of the experts' SFT mixtures and, with `domain_loss`,
a term asking each layer's router to route every token of expert i's sample as expert i itself
did (`DomainRouting`). Reading it (evaluate): its probability per expert and layer over a
domain's examples, and which experts it chooses per sequence.
"""

from __future__ import annotations

import random

import torch

from bar import data, tokenizer
from bar.data.example import derived_seed, read_examples
from bar.decode import choose_experts
from bar.files import output


def sample(experts: list[str], fraction: float, seed: int) -> list[tuple[int, data.Example]]:
    """A stratified sample: `fraction` of each expert's SFT mixture (at least one example), as
    (the expert's slot in the merged MoE, example) pairs."""
    picked = []
    for slot, name in enumerate(experts, start=1):
        pool = read_examples(output("mix_data", name, "sft.jsonl"))
        k = max(1, round(len(pool) * fraction))
        picked += [(slot, e) for e in random.Random(derived_seed(seed, "fit_router", name)).sample(pool, k)]
    return picked


class DomainRouting:
    """The `domain_loss` term, added to the backward pass as Megatron-Core adds its z-loss:
    weight * the cross-entropy between the router's probabilities and expert i's own routing,
    averaged over the sample tokens of the step's batch (each forward pass sums its part and
    divides by the whole batch's count) and over layers.

    Expert i was trained as a 2-slot MoE whose router rows (anchor, i) the merge copied into rows
    0 and i; its routing of a token is the softmax of those two rows' logits, here computed with
    the rows as merged (frozen) on the merged model's hidden state: -sum_s q_s log p_s over
    s in {0, i}. Each batch carries `slots` (packed like `items`, so it lines up token for token):
    the slot of the expert whose sample each token came from (-1: padding). The training loop
    hands over the rows each forward pass computes (`before_forward`: a data-parallel replica's,
    a micro-batch's); under sequence parallelism a router sees its rank's slice of the sequence."""

    def __init__(self, model, items, slots: list[int], weight: float, **batching):
        from bar.train.batches import Batches

        self.weight, self.current, self.kept = weight, None, 0
        self.batches = Batches(items, **batching)
        self.slots = Batches(
            [([s] * len(ids), trained) for (ids, trained), s in zip(items, slots)], **(batching | {"pad_id": -1})
        )
        self.routers = [m for name, m in model.named_modules() if name.endswith("mlp.router")]
        self.merged = {id(r): r.weight.detach().clone() for r in self.routers}
        self.sequence_parallel = model.config.sequence_parallel
        for router in self.routers:
            router.register_forward_hook(self.hook)

    def get(self, step: int) -> dict:
        slots = self.slots.get(step)["tokens"]
        self.kept = int((slots >= 0).sum())
        return self.batches.get(step) | {"slots": slots}

    def num_tokens(self, step: int) -> int:
        return self.batches.num_tokens(step)

    def before_forward(self, part: dict) -> None:
        from bar import parallel

        slots = part["slots"].t()  # [s, b]: Megatron's order
        if self.sequence_parallel:
            slots = slots.chunk(parallel.tp_size())[parallel.tp_rank()]
        self.current = slots.reshape(-1)

    def hook(self, router, args, output):
        import torch

        if not (router.training and torch.is_grad_enabled()):
            return output
        probs, routing_map = output
        keep = self.current >= 0
        hidden = args[0].reshape(self.current.numel(), -1)[keep].float()
        slot = self.current[keep][:, None]
        logp = torch.log_softmax(router.gating(hidden).float(), dim=-1)
        with torch.no_grad():  # expert i's own routing between the anchor and itself
            own = hidden @ self.merged[id(router)].float().t()
            target = torch.softmax(torch.cat([own[:, :1], own.gather(1, slot)], dim=1), dim=-1)
        chosen = torch.cat([logp[:, :1], logp.gather(1, slot)], dim=1)
        loss = -(target * chosen).sum(-1).sum() / self.kept * self.weight / len(self.routers)
        return _AddLoss.apply(probs, loss), routing_map


class _AddLoss(torch.autograd.Function):
    """`output` unchanged, and `loss` added to what the backward pass minimises."""

    @staticmethod
    def forward(ctx, output, loss):
        ctx.save_for_backward(loss)
        return output

    @staticmethod
    def backward(ctx, grad):
        (loss,) = ctx.saved_tensors
        return grad, torch.ones_like(loss)


@torch.no_grad()
def routing_shares(model, tok, examples: list[data.Example], batch_size: int = 16) -> list[list[float]]:
    """Mean router probability of each expert, per layer ([layer][expert]), over the tokens of
    the examples (prompt and reference reply, teacher-forced)."""
    from bar import parallel
    from bar.train.batches import pack

    device = parallel.device()
    routers = [layer.mlp.router for layer in model.decoder.layers]
    captured = {}
    handles = [
        r.register_forward_hook(lambda m, args, out, i=i: captured.__setitem__(i, out[0].float()))
        for i, r in enumerate(routers)
    ]
    items = [tokenizer.example_ids(tok, e) for e in examples]
    rows = pack(items, max(len(ids) for ids, _ in items) - 1, tok.pad_token_id)
    sums, count = torch.zeros(len(routers), model.config.num_moe_experts, device=device), 0
    try:
        model.eval()
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            tokens = torch.tensor([r[0] for r in chunk], device=device)
            segments = torch.tensor([r[2] for r in chunk], device=device)
            model(tokens, None, segments)  # each packed example attends to itself only
            real = (segments > 0).t().reshape(-1)  # the router sees tokens sequence-major
            for i in range(len(routers)):
                sums[i] += captured[i][real].sum(0)
            count += int(real.sum())
    finally:
        for h in handles:
            h.remove()
    return (sums / count).tolist()


def expert_choices(model, tok, examples: list[data.Example], sequence_topk: int, batch_size: int = 32) -> list[float]:
    """Share of the examples' prompts each slot serves when the routed model decodes them with
    `sequence_topk` ([slot]; the anchor, slot 0, serves every prompt)."""
    from bar import parallel

    encoded = [tokenizer.prompt_ids(tok, e.asked, e.tools) for e in examples]
    counts = torch.zeros(model.config.num_moe_experts, dtype=torch.long, device=parallel.device())
    for start in range(0, len(encoded), batch_size):
        counts += choose_experts(
            model, encoded[start : start + batch_size], sequence_topk=sequence_topk, pad_id=tok.pad_token_id
        ).sum(0)
    return [c / len(encoded) for c in counts.tolist()]

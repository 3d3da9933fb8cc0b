"""A half-written or damaged checkpoint is never taken as complete."""

import torch

from bar.train.checkpoint import Resumable, read_meta, write
from conftest import small_arch


def save(root, step, fingerprint="fp"):
    path = root / f"step_{step:07d}"
    write(path, {"model": {"w": torch.full((4, 4), float(step))}}, {"step": step, "fingerprint": fingerprint})
    return path


def test_the_newest_complete_checkpoint_of_the_same_configuration_is_resumed(tmp_path):
    save(tmp_path, 10)
    newest = save(tmp_path, 20)
    assert Resumable(tmp_path, "fp").latest()[1]["step"] == 20
    assert Resumable(tmp_path, "other spec").latest() is None  # another configuration's: never resumed
    # Damaged after it was written (a disk error, a partial copy): its hash no longer matches.
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert read_meta(newest) is None
    assert Resumable(tmp_path, "fp").latest()[1]["step"] == 10


def test_a_checkpoint_killed_while_being_written_is_invisible(tmp_path):
    save(tmp_path, 10)
    # What a kill during `write` leaves: the temporary directory, files but no manifest yet.
    partial = tmp_path / ".step_0000020.tmp-4242"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 100)
    # And a step directory whose manifest is missing or unreadable.
    for broken, manifest in ((tmp_path / "step_0000030", None), (tmp_path / "step_0000040", "{not json")):
        broken.mkdir()
        if manifest:
            (broken / "checkpoint.json").write_text(manifest)
    assert Resumable(tmp_path, "fp").latest()[1]["step"] == 10


def test_restore_brings_back_the_weights_and_every_adamw_moment_exactly(tmp_path, megatron):
    """A 2-slot MoE trained 3 steps by bar's optimizer (groups at two learning-rate scales, the
    anchor FFN frozen), saved, restored into a fresh model and optimizer: the same weights and
    AdamW state (exp_avg, exp_avg_sq, step) bit for bit, and the next step the same as well."""
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.specs import OptimSpec
    from bar.train import optimizer, set_lr
    from bar.train.checkpoint import full_state

    arch = small_arch(vocab_size=64, seq_length=16)
    optim = OptimSpec(lr=1e-2, weight_decay=0.1)
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))

    def fresh(seed):
        torch.manual_seed(seed)
        model = build(arch, 1, num_experts=2)
        set_trainable(model, ["domain_ffn", "router", "embeddings"])
        opt = optimizer(model, optim, {"embeddings": 0.1})
        set_lr(opt, optim.lr)
        return model, opt

    def step(model, opt):
        opt.zero_grad()
        model(x, None, None, labels=x).mean().backward()
        opt.step()

    model, opt = fresh(1)
    for _ in range(3):
        step(model, opt)
    ckpt = Resumable(tmp_path, "fp")
    ckpt.save(3, model, opt, {"log": []})
    other, other_opt = fresh(2)
    assert not torch.equal(full_state(other)["output_layer.weight"], full_state(model)["output_layer.weight"])
    assert ckpt.restore(other, other_opt)["step"] == 3
    assert all(torch.equal(a, b) for a, b in zip(full_state(model).values(), full_state(other).values()))
    trained = {n for n, main in opt.main.items() if opt.adamw.state.get(main)}
    assert trained and trained == {n for n, main in other_opt.main.items() if other_opt.adamw.state.get(main)}
    assert all("local_experts.0." not in n for n in trained)  # the anchor FFN has no moments
    for name in trained:
        mine, theirs = opt.adamw.state[opt.main[name]], other_opt.adamw.state[other_opt.main[name]]
        assert theirs["exp_avg_sq"].abs().max() > 0
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(mine[key], theirs[key]), (name, key)
    step(model, opt)
    step(other, other_opt)
    after, other_after = full_state(model), full_state(other)
    assert all(torch.equal(after[n], other_after[n]) for n in after)


def test_a_resumed_run_says_and_records_the_step_it_resumed_from(tmp_path, megatron, capsys):
    """bar.train.train run to the end leaves its newest checkpoint (step 4 of 6); run again on a
    fresh model it resumes there, says so on stderr, marks the first record after it with
    `resumed_from`, and ends where the uninterrupted run ended."""
    from bar.model import build
    from bar.specs import TrainSpec
    from bar.train import train
    from bar.train.batches import Batches
    from bar.train.checkpoint import full_state

    arch = small_arch(num_layers=1, vocab_size=64, seq_length=16)
    spec = TrainSpec(steps=6, batch_size=2, checkpoint_every=2, optim={"lr": 1e-2})
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, 64, (12,), generator=g).tolist(), [True] * 12) for _ in range(20)]
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build(arch, 1)
        log = train(
            model,
            Batches(items, batch_size=2, seq_length=16, pad_id=0, seed=0),
            spec,
            Resumable(tmp_path, "fp"),
            desc="tiny",
        )
        runs.append((log, full_state(model), capsys.readouterr().err))
    (first, weights, said), (second, resumed_weights, resumed_said) = runs
    assert not any("resumed_from" in r for r in first) and "resuming" not in said
    assert [r["step"] for r in second] == list(range(1, 7))
    assert [(r["step"], r["resumed_from"]) for r in second if "resumed_from" in r] == [(5, 4)]
    assert f"tiny: resuming from step 4 of 6 ({tmp_path})" in resumed_said
    assert [r["loss"] for r in second] == [r["loss"] for r in first]
    assert all(torch.equal(weights[n], resumed_weights[n]) for n in weights)

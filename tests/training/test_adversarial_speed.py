"""The adversarial speed options compute the same WGAN-GP updates as the eager whole-batch loop.

One iteration of a tiny WGAN-GP (width 1/4, batch 2, two critic updates on two fixed batches,
then a generator update; fp32 on the CPU, fixed seeds) with an option on is compared with the
same iteration with it off: the gradients each optimiser steps with, the logged losses and every
weight and buffer afterwards (the spectral-norm power-iteration vectors included).

Tolerances: in fp32 on the CPU an option may only change the order of float sums (micro-batch
sums, oneDNN's channels-last kernels, fused Adam's arithmetic). Measured (torch 2.13, CPU): step
gradients differ by at most 5e-6 of the step's largest gradient, losses by 3e-7, weights by 8e-7.
Allowed: gradients ``GRAD_TOL`` = 1e-4 × the step's largest gradient (plus 1e-4 relative),
losses 1e-6 absolute + 1e-5 relative, weights and buffers 1e-5 (a tenth of one Adam step of lr
1e-4). Adam's first steps are about ±lr per weight whatever the gradient's scale, so a gradient
off by a factor would hardly show in the weights: the gradients are compared directly.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from crysgen.errors import CrysgenError
from crysgen.training.adversarial import AdversarialModule, adam, channels_last
from crysgen.training.config import AdversarialTrainConfig
from crysgen.training.runs import batch_loader

BATCH, N_CRITIC = 2, 2
GRAD_TOL = 1e-4
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}
STATE_TOL = {"rtol": 1e-5, "atol": 1e-5}


def tiny_wgan(**options: Any) -> AdversarialTrainConfig:
    """A width-1/4 WGAN-GP with the given speed options.

    Not 1/8: its first layers have 2 channels, and LayerNorm over 2 channels is ±1, a sign
    function with no gradient (the critic's penalty gradients would be rounding noise).
    """
    return AdversarialTrainConfig.from_dict(
        {"net": {"kind": "wgan", "width": 0.25},
         "optim": {"batch_size": BATCH, "n_critic": N_CRITIC, "max_steps": 1, "log_every": 1,
                   **options}})


class StepRecorder(L.Callback):
    """Records the gradients every optimiser steps with (a copy, just before its step)."""

    def __init__(self) -> None:
        self.grads: list[list[torch.Tensor]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for opt in trainer.optimizers:
            opt.register_step_pre_hook(self.record)

    def record(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.grads.append([p.grad.detach().clone() for g in opt.param_groups for p in g["params"]])


@torch.no_grad()
def spread_biases(module: torch.nn.Module) -> None:
    """Draw every bias from N(0, 0.5²) (fixed seed) instead of Keras's zeros.

    With zero biases the critic's first layer (a 1×1×1 convolution from one channel, then
    LayerNorm over its channels) gives sign(x) × a constant vector: the critic is flat in its
    input up to LayerNorm's epsilon, the penalty's gradient norm is ~0 and the generator's
    gradients are ~1e-12, pure rounding noise that no relative tolerance can compare.
    """
    gen = torch.Generator().manual_seed(2)
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def one_iteration(*, dropout: bool = True, **options: Any) -> dict[str, Any]:
    """Train one iteration with ``options``; its step gradients, losses and final state."""
    L.seed_everything(0)
    module = AdversarialModule(tiny_wgan(**options).to_dict())
    spread_biases(module)
    if not dropout:  # p = 0 draws no random numbers
        module.critic.head[1].p = 0.0
    real = torch.rand(BATCH * N_CRITIC, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    recorder = StepRecorder()
    trainer = L.Trainer(max_steps=N_CRITIC + 1, accelerator="cpu", logger=False, callbacks=[recorder],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, batch_loader(real, batch_size=BATCH, shuffle=False))
    assert module.iteration(trainer) == 1
    losses = {k: v.clone() for k, v in trainer.callback_metrics.items()
              if k in ("critic_loss", "gradient_penalty", "g_loss", "wasserstein_estimate")}
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return {"grads": recorder.grads, "losses": losses, "state": state}


def assert_same_iteration(got: dict[str, Any], ref: dict[str, Any]) -> None:
    """The step gradients, logged losses and final weights and buffers agree."""
    assert len(got["grads"]) == len(ref["grads"]) == N_CRITIC + 1
    for step, (g, r) in enumerate(zip(got["grads"], ref["grads"], strict=True)):
        assert len(g) == len(r), f"optimiser step {step}: parameter count"
        atol = GRAD_TOL * max(float(b.abs().max()) for b in r)
        for i, (a, b) in enumerate(zip(g, r, strict=True)):
            torch.testing.assert_close(a, b, rtol=GRAD_TOL, atol=atol, check_stride=False,
                                       msg=lambda m, s=step, i=i: f"optimiser step {s}, gradient {i}: {m}")
    assert set(got["losses"]) == set(ref["losses"]) and len(ref["losses"]) == 4
    for k, v in ref["losses"].items():
        torch.testing.assert_close(got["losses"][k], v, **LOSS_TOL, msg=k)
    assert got["state"].keys() == ref["state"].keys()
    for k, v in ref["state"].items():
        if v.is_floating_point():
            torch.testing.assert_close(got["state"][k], v, **STATE_TOL, check_stride=False,
                                       msg=lambda m, k=k: f"{k}: {m}")
        else:
            assert torch.equal(got["state"][k], v), k


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The eager whole-batch iteration, dropout on."""
    return one_iteration()


@pytest.fixture(scope="module")
def reference_no_dropout() -> dict[str, Any]:
    """The eager whole-batch iteration with the critic's dropout at p = 0."""
    return one_iteration(dropout=False)


def test_channels_last_gives_the_same_iteration(reference):
    assert_same_iteration(one_iteration(channels_last=True), reference)


def test_fused_adam_gives_the_same_iteration(reference):
    assert_same_iteration(one_iteration(fused=True), reference)


def test_micro_batches_give_the_same_iteration(reference_no_dropout):
    # dropout off: micro-batches draw their masks per micro-batch (the same distribution, other
    # draws), and with p = 0 both loops draw the same noise and mixing weights
    assert_same_iteration(one_iteration(dropout=False, micro_batch=1), reference_no_dropout)


def test_micro_batches_with_dropout_draw_other_masks(reference):
    got = one_iteration(micro_batch=1)
    assert not torch.allclose(got["grads"][0][-1], reference["grads"][0][-1], rtol=GRAD_TOL)


def test_compiled_forwards_give_the_same_iteration(reference_no_dropout, monkeypatch):
    # Inductor takes minutes per network on this CPU; aot_eager traces the same graphs (dynamo,
    # AOT autograd, the spectral norm's in-place buffer updates) without generating kernels.
    # Dropout off: compiled graphs draw their masks with other random streams.
    modes, compile_ = [], torch.compile

    def traced(net: torch.nn.Module, mode: str | None = None) -> Any:
        modes.append(mode)
        return compile_(net, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", traced)
    torch._dynamo.reset()
    got = one_iteration(dropout=False, compile="reduce-overhead")
    assert modes == ["reduce-overhead"] * 2
    assert_same_iteration(got, reference_no_dropout)


def test_compiled_layers_never_fall_back_to_eager(monkeypatch):
    # The spectral norm's graph breaks leave one frame per layer call; the 21 ChannelLayerNorm of
    # the WGAN-GP share one code object with 21 shapes, past dynamo's default of 8 recompiles, after
    # which it ran those layers eagerly (a third of the compiled speed-up on an H200).
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, mode=None: compile_(net, backend="aot_eager"))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        one_iteration(dropout=False, compile=True)


def gan_iteration() -> dict[str, torch.Tensor]:
    """One vanilla-GAN iteration of a tiny GAN (width 1/4, batch 4, dropout off) on a fixed batch,
    outside Lightning, compiled as ``torch.compile`` is patched; its logged values."""
    L.seed_everything(0)
    module = AdversarialModule(AdversarialTrainConfig.from_dict(
        {"net": {"kind": "gan", "width": 0.25},
         "optim": {"batch_size": 4, "compile": True}}).to_dict())
    module.critic.head[1].p = 0.0
    module.manual_backward = lambda loss, *a, **kw: loss.backward(*a, **kw)
    opt_g, opt_d = module.configure_optimizers()
    real = torch.rand(4, 1, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    return module.gan_update(real, opt_g, opt_d)


def test_compiled_gan_iteration_equals_eager(monkeypatch):
    # The GAN's flat-depth convolutions feed BatchNorm3d: a traced graph that took the eager
    # zero-copy layout for granted failed at the next reshape ("view size is not compatible").
    # One iteration: the losses of its three steps (each after the previous step's update) agree
    # to ~1e-6; later iterations drift more, as Adam turns rounding-level gradients (the biases
    # before BatchNorm) into steps of ±lr.
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, mode=None: net)  # eager
    ref = gan_iteration()
    monkeypatch.setattr(torch, "compile", lambda net, mode=None: compile_(net, backend="aot_eager"))
    torch._dynamo.reset()
    got = gan_iteration()
    assert set(got) == set(ref) and len(ref) == 5
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-5, msg=k)


def test_channels_last_keeps_single_channel_weights_contiguous():
    # Inductor's fake convolution backward predicts a channels-last gradient for a weight with one
    # input or output channel where cuDNN returns a contiguous one: the GAN's compiled iteration
    # failed on an H200 at the generator's first transposed convolution (1 -> 256 channels)
    net = AdversarialModule(AdversarialTrainConfig.from_dict(
        {"net": {"kind": "gan", "width": 0.25}}).to_dict()).generator
    channels_last(net)
    weights = {n: p for n, p in net.named_parameters() if p.dim() == 5}
    single = {n for n, p in weights.items() if 1 in p.shape[:2]}
    assert "up1.0.0.weight" in single and len(single) < len(weights)
    for n, p in weights.items():
        if n in single:
            assert p.is_contiguous(), n
        else:
            assert p.is_contiguous(memory_format=torch.channels_last_3d) and not p.is_contiguous(), n


def test_all_options_together(reference_no_dropout, monkeypatch):
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, mode=None: compile_(net, backend="aot_eager"))
    torch._dynamo.reset()
    got = one_iteration(dropout=False, channels_last=True, fused=True, micro_batch=1, compile=True)
    assert_same_iteration(got, reference_no_dropout)


def test_speed_options_are_checked():
    with pytest.raises(CrysgenError, match="BatchNorm"):
        AdversarialTrainConfig.from_dict({"net": {"kind": "gan"}, "optim": {"micro_batch": 16}})
    with pytest.raises(CrysgenError, match="divide batch_size"):
        tiny_wgan(micro_batch=3)
    with pytest.raises(CrysgenError, match="compile"):
        tiny_wgan(compile="fast")
    cfg = tiny_wgan(compile=True, channels_last=True, fused=True, micro_batch=1)
    assert AdversarialTrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.optim.compile_mode == "default" and tiny_wgan().optim.compile_mode is None


def test_fused_adam_falls_back_where_unsupported(monkeypatch):
    plain = torch.optim.Adam

    def no_fused(params: Any, **kw: Any) -> torch.optim.Adam:
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be of supported devices")
        return plain(params, **kw)

    cpu = adam([torch.nn.Parameter(torch.zeros(3))], 1e-4, (0.0, 0.9), 1e-7, fused=True)
    assert cpu.defaults["fused"]  # the CPU has fused Adam kernels (torch >= 2.4)
    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    with pytest.warns(UserWarning, match="fused Adam is not supported"):
        opt = adam([torch.nn.Parameter(torch.zeros(3))], 1e-4, (0.0, 0.9), 1e-7, fused=True)
    assert not opt.defaults["fused"]
    assert (opt.defaults["lr"], opt.defaults["betas"], opt.defaults["eps"]) == (1e-4, (0.0, 0.9), 1e-7)


@pytest.mark.slow
def test_inductor_compiled_critic_survives_two_forwards_and_the_penalty_before_backward():
    # Inductor (not aot_eager) kept the spectral norm's power-iteration vectors themselves for
    # the backward; the fake batch's forward and the penalty's eager pass updated them in place
    # and the critic's backward failed on the H200 and here. `compiled` keeps the
    # parametrisations eager. Width 1/8: the smallest critic; compiling it takes ~1 min here.
    from crysgen.objectives.adversarial import gradient_penalty
    from crysgen.training.adversarial import compiled

    torch._dynamo.reset()
    L.seed_everything(0)
    module = AdversarialModule(AdversarialTrainConfig.from_dict(
        {"net": {"kind": "wgan", "width": 0.125}, "optim": {"batch_size": BATCH}}).to_dict())
    critic = module.critic
    real, fake = torch.rand(2, BATCH, 1, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    fast = compiled(critic, "default")
    loss = fast(real).mean() - fast(fake).mean() + gradient_penalty(critic, real, fake)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in critic.parameters())

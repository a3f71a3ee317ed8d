"""What each step option changes: MixUp, CutMix, label smoothing, gradient clipping and EMA."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnn_train.engine.precision import resolve_precision
from cnn_train.engine.stepper import Stepper, StepSettings
from cnn_train.optim import build_optimizer, build_schedule
from tests.helpers import QUICK, compose_config

CLASSES = 10
SIDE = 8


def small_net(seed: int = 0) -> nn.Module:
    """A conv, BatchNorm (for buffers) and linear layer: enough to see each option's effect."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * SIDE * SIDE, CLASSES),
    )


def make_stepper(model: nn.Module, *overrides: str) -> Stepper:
    """The project's Stepper as a run builds it from the composed config (fp32, constant LR, hard
    labels unless `overrides` smooth them)."""
    cfg = compose_config(
        "train", [*QUICK, "scheduler=none", "trainer.label_smoothing=0", *overrides]
    )
    optimizer = build_optimizer(cfg.optimizer, model)
    schedule = build_schedule(cfg.scheduler, optimizer, 10, cfg.optimizer.lr, 5)
    return Stepper(
        model,
        model,
        StepSettings.from_config(cfg),
        precision=resolve_precision("fp32", torch.device("cpu")),
        optimizer=optimizer,
        schedule=schedule,
        num_classes=CLASSES,
        channels_last=False,
    )


def batch(seed: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with distinct pixel values and labels that differ between neighbours."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, SIDE, SIDE, generator=generator)
    return images, torch.arange(size) % CLASSES


def fed_images(model: nn.Module, stepper: Stepper, images, targets):
    """Run one training batch; return (the images the model saw, logits, loss)."""
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    logits, loss, _ = stepper.train_batch(images, targets)
    handle.remove()
    return seen[0], logits.detach(), loss.detach()


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()


def pair_targets(targets: torch.Tensor, lam: float) -> torch.Tensor:
    """lam of each image's own label and 1 - lam of its partner's (torchvision pairs each image
    with the one before it in the batch)."""
    one_hot = F.one_hot(targets, CLASSES).float()
    return lam * one_hot + (1 - lam) * one_hot.roll(1, 0)


def test_mixup_trains_on_blends_of_two_images_and_of_their_labels() -> None:
    model = small_net()
    stepper = make_stepper(model, "data.mixup_alpha=1.0")
    blends = []
    for seed in range(4):
        images, targets = batch(seed)
        fed, logits, loss = fed_images(model, stepper, images, targets)
        partners = images.roll(1, 0)
        lam = float(
            ((fed - partners) * (images - partners)).sum() / (images - partners).square().sum()
        )
        torch.testing.assert_close(fed, lam * images + (1 - lam) * partners)
        torch.testing.assert_close(loss, soft_cross_entropy(logits, pair_targets(targets, lam)))
        blends.append(lam)
    assert any(0.05 < lam < 0.95 for lam in blends), blends
    assert not torch.allclose(loss, F.cross_entropy(logits, targets))


def test_cutmix_pastes_a_patch_of_the_partner_image_and_weights_labels_by_its_area() -> None:
    model = small_net()
    stepper = make_stepper(model, "data.cutmix_alpha=1.0")
    patched = 0
    for seed in range(4):
        images, targets = batch(seed)
        fed, logits, loss = fed_images(model, stepper, images, targets)
        partners = images.roll(1, 0)
        box = (fed == partners).all(0).all(0)  # one box per batch, at the same place in every image
        torch.testing.assert_close(fed, torch.where(box, partners, images), rtol=0, atol=0)
        rows, cols = box.nonzero(as_tuple=True)
        if len(rows):
            height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert box.sum() == height * width  # a rectangle
            patched += int(box.sum() < SIDE * SIDE)
        lam = 1 - box.sum().item() / (SIDE * SIDE)
        torch.testing.assert_close(loss, soft_cross_entropy(logits, pair_targets(targets, lam)))
    assert patched, "no batch got a patch"


def test_label_smoothing_gives_the_smoothed_cross_entropy() -> None:
    model = small_net()
    stepper = make_stepper(model, "trainer.label_smoothing=0.1")
    images, targets = batch(0)
    _, logits, loss = fed_images(model, stepper, images, targets)
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)
    expected = (0.9 * nll - 0.1 * log_p.mean(1)).mean()
    torch.testing.assert_close(loss, expected)
    assert (loss - F.cross_entropy(logits, targets)).abs() > 1e-3


def grad_norm_at_the_optimizer_step(*overrides: str) -> float:
    """The global gradient norm the optimizer steps with, after one batch."""
    model = small_net()
    stepper = make_stepper(model, *overrides)
    norms: list[float] = []

    def record(*_: object) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    stepper.optimizer.register_step_pre_hook(record)
    stepper.train_batch(*batch(0))
    (norm,) = norms
    return norm


def test_gradient_clipping_bounds_the_norm_and_leaves_smaller_ones_alone() -> None:
    raw = grad_norm_at_the_optimizer_step()
    assert raw > 0.1
    clipped = grad_norm_at_the_optimizer_step(f"trainer.grad_clip_norm={raw / 4}")
    assert clipped == pytest.approx(raw / 4, rel=1e-5)
    loose = grad_norm_at_the_optimizer_step(f"trainer.grad_clip_norm={raw * 4}")
    assert loose == pytest.approx(raw, rel=1e-6)


def test_ema_follows_the_update_rule_for_weights_and_buffers() -> None:
    decay = 0.9
    model = small_net()
    stepper = make_stepper(model, f"trainer.ema_decay={decay}")
    assert stepper.ema is not None
    after = []
    for seed in range(3):
        stepper.train_batch(*batch(seed))
        after.append(copy.deepcopy(model.state_dict()))
    # torch's AveragedModel starts from the first step's weights, then
    # ema = decay * ema + (1 - decay) * model after every step; use_buffers averages buffers too.
    expected = after[0]
    for state in after[1:]:
        expected = {
            key: decay * expected[key] + (1 - decay) * value if value.is_floating_point() else value
            for key, value in state.items()
        }
    ema = stepper.ema.module.state_dict()
    floating = [key for key, value in expected.items() if value.is_floating_point()]
    assert "1.running_mean" in floating and "1.running_var" in floating
    for key in floating:
        torch.testing.assert_close(ema[key], expected[key], msg=key)
    for key in ("0.weight", "1.running_mean", "4.weight"):  # an average, not the last weights
        assert not torch.allclose(ema[key], after[-1][key]), key
    assert stepper.state_dict()["ema_updates"] == 3

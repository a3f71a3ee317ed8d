"""Which sample indices a rank reads in one pass, from (seed, epoch) alone."""

from __future__ import annotations

import numpy as np
import torch

from cnn_train.errors import UserError

SEED_STRIDE = 100_003
SAMPLE_SALT = 7  # keeps per-sample seeds apart from the per-batch ones of the same numbers
SPLIT_SEED = 0  # the one seed of every held-out validation split: the same split in every run


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The RNG seed of one training sample's augmentation: its position in the rank's pass,
    not its dataset index, so repeated copies of one image are augmented differently."""
    return mixed_seed(seed, epoch, rank, position, SAMPLE_SALT)


def mixed_seed(seed: int, epoch: int, *extra: int) -> int:
    """One RNG seed from (seed, epoch, *extra) only."""
    value = seed * SEED_STRIDE + epoch
    for part in extra:
        value = value * SEED_STRIDE + part
    return value % (2**63)


def epoch_generator(seed: int, epoch: int, *extra: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, *extra) only."""
    return torch.Generator().manual_seed(mixed_seed(seed, epoch, *extra))


def pass_indices(
    count: int,
    *,
    train: bool,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    balanced_by: torch.Tensor | None = None,
    repeats: int = 1,
) -> torch.Tensor:
    """The indices rank `rank` reads in one pass.

    Training: the (seed, epoch) permutation, every `world_size`-th index from `rank`, trimmed so
    every rank gets the same number of full batches; with `balanced_by` (the samples' labels,
    `data.sampler=balanced`) the pass draws with replacement, each class equally likely.
    `repeats` N > 1 (`data.repeated_aug`, torchvision's RASampler): the first ceil(count / N)
    picks, each N times in a row, so the pass keeps its length and the N copies of an image go
    to N consecutive ranks (each a different augmentation: it depends on the position).
    Evaluation: `rank::world_size` in order, so the
    ranks together read every sample exactly once.
    """
    if not train:
        return torch.arange(rank, count, world_size)
    if balanced_by is not None:  # as many draws as samples, each class equally likely
        counts = torch.bincount(balanced_by).double()
        weights = 1.0 / counts[balanced_by]
        generator = epoch_generator(seed, epoch)
        order = torch.multinomial(weights, count, replacement=True, generator=generator)
    else:
        order = torch.randperm(count, generator=epoch_generator(seed, epoch))
    if repeats > 1:
        order = order[: -(-count // repeats)].repeat_interleave(repeats)[:count]
    per_rank = (count // world_size) // batch_size * batch_size
    return order[rank::world_size][:per_rank]


def batch_count(count: int, *, train: bool, batch_size: int, rank: int, world_size: int) -> int:
    """How many batches `pass_indices` yields for this rank."""
    if train:
        return (count // world_size) // batch_size
    mine = len(range(rank, count, world_size))
    return -(-mine // batch_size)


def holdout_split(
    labels: torch.Tensor, fraction: float, hint: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed stratified split of samples with `labels`: (kept, held-out) indices, each in the
    split's own shuffled order (sort them to keep the files' order).

    Every class needs samples on both sides, else a UserError ending in `hint` (what to change).
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    try:
        kept, held = train_test_split(
            indices, test_size=fraction, stratify=labels.numpy(), random_state=SPLIT_SEED
        )
    except ValueError as error:
        counts = torch.bincount(labels)
        raise UserError(
            f"cannot hold out data.val_fraction={fraction} of {len(labels)} images in "
            f"{len(counts)} classes (the smallest has {int(counts.min())}); every class needs "
            f"images on both sides: {hint}"
        ) from error
    return torch.from_numpy(kept), torch.from_numpy(held)

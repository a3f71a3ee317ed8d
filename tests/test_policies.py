"""`data.auto_augment` and `data.random_erase`: each sample its own operation, magnitude and box,
on the in-memory and the worker path alike, and every batch a function of (seed, epoch, rank,
position in the pass) alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import _auto_augment

from cnn_train.config_checks import check_train_config
from cnn_train.data import InMemoryDataset, LabelledImages, make_loader
from cnn_train.data.memory import InMemoryLoader
from cnn_train.data.policies import Augmentation, PolicySettings, erase
from cnn_train.data.stream import StreamLoader
from cnn_train.errors import UserError
from tests.helpers import compose_config, run_cli

CPU = torch.device("cpu")
POLICIES = (
    "trivialaugment",
    "randaugment",
    "autoaugment_imagenet",
    "autoaugment_cifar10",
    "augmix",
)
PATHS = ("true", "false")  # data.in_memory: batched on the device, or per image in workers


def same_image_dataset(count: int = 32, side: int = 16) -> InMemoryDataset:
    """`count` copies of one random image: any difference between samples is augmentation."""
    image = torch.randint(0, 256, (1, 3, side, side), generator=torch.Generator().manual_seed(0))
    split = LabelledImages(image.to(torch.uint8).repeat(count, 1, 1, 1), torch.arange(count) % 2)
    return InMemoryDataset(
        {"train": split, "val": split}, ["a", "b"], side, (0.5,) * 3, (0.25,) * 3
    )


def train_loader(
    dataset: InMemoryDataset,
    path: str,
    *,
    policy: str = "none",
    erase_probability: float = 0.0,
    seed: int = 0,
    num_workers: int = 0,
    batch_size: int = 16,
) -> InMemoryLoader | StreamLoader:
    settings = PolicySettings(name=policy, random_erase=erase_probability)
    return make_loader(
        dataset,
        "train",
        image_size=dataset.native_size,
        batch_size=batch_size,
        device=CPU,
        train=True,
        seed=seed,
        augment="cifar",
        in_memory_setting=path,
        num_workers=num_workers,
        augmentation=Augmentation(policies=settings),
    )


def epoch_batches(loader: InMemoryLoader | StreamLoader, epoch: int = 0) -> torch.Tensor:
    loader.set_epoch(epoch)
    return torch.cat([images for images, _ in loader])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", POLICIES)
def test_each_sample_draws_its_own_operation_and_magnitude(
    policy: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple[str, float]] = []
    original = _auto_augment._AutoAugmentBase._apply_image_or_video_transform

    def recording(self, image, transform_id, magnitude, **kwargs):
        assert image.dim() == 3 or len(image) == 1, "a policy must see one image, not the batch"
        drawn.append((transform_id, round(float(magnitude), 4)))
        return original(self, image, transform_id, magnitude, **kwargs)

    monkeypatch.setattr(
        _auto_augment._AutoAugmentBase, "_apply_image_or_video_transform", recording
    )
    loader = train_loader(same_image_dataset(), path, policy=policy)
    batch = next(iter(loader))[0]
    assert len(drawn) >= 8  # AutoAugment skips some operations by their probability
    assert len(set(drawn)) >= 4
    assert len({row.numpy().tobytes() for row in batch}) >= len(batch) - 4  # a few may match


@pytest.mark.parametrize("path", PATHS)
def test_random_erase_zeroes_a_box_per_sample_after_normalising(path: str) -> None:
    dataset = same_image_dataset()
    plain = epoch_batches(train_loader(dataset, path))
    erased = epoch_batches(train_loader(dataset, path, erase_probability=0.75))
    changed = plain != erased
    assert torch.all(erased[changed] == 0)  # the fill is 0 after normalisation: the mean colour
    erased_samples = changed.flatten(1).any(1)
    assert 0.4 < erased_samples.float().mean() < 1.0
    boxes = {tuple(row.nonzero().min(0).values.tolist()) for row in changed[erased_samples]}
    assert len(boxes) > len(erased) // 4  # boxes differ from sample to sample


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("policy", POLICIES)
def test_one_seed_gives_bitwise_equal_epochs_and_other_epochs_differ(
    policy: str, path: str
) -> None:
    dataset = same_image_dataset(24)
    first = train_loader(dataset, path, policy=policy, erase_probability=0.5, batch_size=8)
    second = train_loader(dataset, path, policy=policy, erase_probability=0.5, batch_size=8)
    assert torch.equal(epoch_batches(first, 1), epoch_batches(second, 1))
    assert not torch.equal(epoch_batches(first, 1), epoch_batches(first, 2))
    other_seed = train_loader(dataset, path, policy=policy, batch_size=8, seed=1)
    assert not torch.equal(epoch_batches(first, 1), epoch_batches(other_seed, 1))


def test_worker_count_changes_nothing_on_the_worker_path() -> None:
    dataset = same_image_dataset(24)
    options = {"policy": "trivialaugment", "erase_probability": 0.5, "batch_size": 8}
    alone = epoch_batches(train_loader(dataset, "false", **options), 1)
    workers = epoch_batches(train_loader(dataset, "false", num_workers=2, **options), 1)
    assert torch.equal(alone, workers)


def test_erase_matches_torchvisions_fill_on_the_box() -> None:
    images = torch.randn(2, 3, 6, 5)
    boxes = torch.tensor([[1, 2, 3, 2], [0, 0, 0, 0]])
    expected = images.clone()
    expected[0, :, 1:4, 2:4] = 0
    assert torch.equal(erase(images.clone(), boxes), expected)


@pytest.mark.parametrize(
    "override",
    ["data.auto_augment=trivialaugment", "data.random_erase=0.25"],
)
def test_a_policy_without_an_augmenting_preset_is_refused(override: str) -> None:
    cfg = compose_config("train", ["data=synthetic", "device=cpu", override])
    with pytest.raises(UserError, match=r"needs an augmenting preset: set data\.augment=cifar"):
        check_train_config(cfg)


def test_the_installed_cli_refuses_a_policy_on_preset_none_in_one_line(tmp_path: Path) -> None:
    done = run_cli("cnn-train", "data=synthetic", "data.auto_augment=augmix", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: data.auto_augment=augmix needs an augmenting preset: set data.augment=cifar or "
        "imagenet"
    )


def test_grey_images_take_a_policy_in_memory() -> None:
    dataset = same_image_dataset(8)
    grey = LabelledImages(dataset.splits["train"].images[:, :1], dataset.splits["train"].labels)
    dataset.splits = {"train": grey, "val": grey}
    batch = epoch_batches(train_loader(dataset, "true", policy="trivialaugment", batch_size=8))
    assert batch.shape == (8, 3, 16, 16)

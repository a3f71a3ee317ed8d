"""The augmentation presets: normalized images of the right side, AlexNet's lighting noise with
the published covariance, and CIFAR's batched padded crop and mirror."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cnn_train.data.preprocessing import eval_preprocessing
from cnn_train.data.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LIGHTING_STD,
    PRESETS,
    Lighting,
    Normalize,
    augment_batch,
    image_transform,
)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("train", [True, False])
def test_presets_give_normalized_images_of_the_right_side(preset: str, train: bool) -> None:
    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8)
    dataset = SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD, splits={})
    evaluation = eval_preprocessing(dataset, 224, preset)  # one pipeline for every preset's eval
    sample = image_transform(preset, 224)(image) if train else evaluation.resize(image)
    assert sample.dtype == (torch.float32 if preset == "alexnet2012" and train else torch.uint8)
    out = Normalize(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))(sample[None])[0]
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    slack = 0.2 if preset == "alexnet2012" and train else 1e-4  # lighting shifts a few sigma
    per_channel = out.flatten(1)
    assert (per_channel.min(1).values >= low - slack).all()
    assert (per_channel.max(1).values <= high + slack).all()


# AlexNet's PCA of ImageNet's RGB pixels in [0, 1] and its noise std (Krizhevsky et al. 2012,
# section 4.1; the eigenvalues and eigenvectors as published with fb.resnet.torch).
PUBLISHED_EIGVAL = (0.2175, 0.0188, 0.0045)
PUBLISHED_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
PUBLISHED_STD = 0.1


def test_lighting_noise_has_the_published_covariance() -> None:
    assert (IMAGENET_EIGVAL, IMAGENET_EIGVEC, LIGHTING_STD) == (
        PUBLISHED_EIGVAL,
        PUBLISHED_EIGVEC,
        PUBLISHED_STD,
    )
    draws = 20_000
    zeros = torch.zeros(draws, 3, 1, 1)
    offsets = Lighting()(zeros, generator=torch.Generator().manual_seed(0)).flatten(1).double()
    vectors = torch.tensor(PUBLISHED_EIGVEC, dtype=torch.float64)
    variances = (PUBLISHED_STD * torch.tensor(PUBLISHED_EIGVAL, dtype=torch.float64)) ** 2
    expected = vectors @ torch.diag(variances) @ vectors.T
    measured = torch.cov(offsets.T)
    assert offsets.mean(0).abs().max() < 4 * variances.max().sqrt() / draws**0.5
    assert torch.allclose(measured, expected, atol=0.05 * variances.max().item())
    # along each eigenvector the noise has that eigenvalue's variance, and no cross-correlation
    projected = vectors.T @ measured @ vectors
    assert torch.allclose(projected.diag(), variances, rtol=0.05, atol=1e-8)
    assert projected.triu(1).abs().max() < 0.05 * variances.max()


def test_batched_cifar_augment_is_a_padded_crop_or_its_mirror() -> None:
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = augment_batch(images, "cifar", train=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips = 0
    for image, result in zip(padded, out, strict=True):
        windows = [image[:, t : t + 32, s : s + 32] for t in range(9) for s in range(9)]
        plain = any(torch.equal(result, w) for w in windows)
        mirrored = any(torch.equal(result, w.flip(-1)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 16 < flips < 48

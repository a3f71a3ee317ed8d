"""One evaluation input per image file, whichever path reads it: validation streamed per image,
validation decoded once into memory, the loader `cnn-eval` builds, and `cnn-predict`'s
preprocessing rebuilt from a checkpoint's record."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnn_train.build import build_model_and_data, split_loader
from cnn_train.data import InMemoryDataset, LabelledImages, make_loader
from cnn_train.data.memory import InMemoryLoader
from cnn_train.data.preprocessing import EvalPreprocessing, eval_preprocessing
from cnn_train.data.stream import StreamLoader
from cnn_train.errors import UserError
from cnn_train.inference import InferenceModel
from tests.helpers import compose_config
from tests.helpers.eval_inputs import (
    by_file,
    checkpoint_record,
    predicted_inputs,
    random_image,
    write_folder,
)

CPU = torch.device("cpu")
RECORD_KEYS = {"image_size", "resize_short_side", "mean", "std", "channels", "interpolation"}


@pytest.mark.parametrize("augment", ["none", "cifar", "imagenet"])
def test_every_evaluation_path_gives_a_file_the_same_input(
    tmp_path: Path, augment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_folder(tmp_path / "tree")
    overrides = [f"data.augment={augment}", "data.image_size=24", "data.num_workers=0"]
    cfg = compose_config("train", ["data=folder", f"data.root={tmp_path / 'tree'}", *overrides])
    built = build_model_and_data(cfg.model, cfg.data)
    paths = built.dataset.splits["val"].paths
    assert sorted(paths) == [str(path) for path in files]
    options = dict(image_size=24, batch_size=3, device=CPU, train=False, augment=augment)

    streamed = make_loader(built.dataset, "val", **options, in_memory_setting="false")
    assert isinstance(streamed, StreamLoader)
    expected = by_file(streamed, paths)
    assert next(iter(expected.values())).shape == (3, 24, 24)
    if augment != "imagenet":  # the presets batched from memory
        decoded = make_loader(built.dataset, "val", **options, in_memory_setting="true")
        assert isinstance(decoded, InMemoryLoader)
        inputs = by_file(decoded, paths)
        assert all(torch.equal(inputs[path], expected[path]) for path in paths)
    # cnn-eval: the checkpoint's data config, its split, through build.split_loader
    inputs = by_file(split_loader(built, cfg.data.split, 2, CPU, train=False), paths)
    assert all(torch.equal(inputs[path], expected[path]) for path in paths)

    record = checkpoint_record(eval_preprocessing(built.dataset, 24, augment).to_record())
    assert set(record) == RECORD_KEYS
    loaded = InferenceModel(nn.Identity(), built.dataset.class_names, record, {})
    inputs = predicted_inputs(loaded, paths, monkeypatch)
    assert all(torch.equal(inputs[path], expected[path]) for path in paths)
    for path in paths:
        if path.endswith(".png"):  # Pillow decodes PNGs as the loaders do
            with Image.open(path) as image:
                assert torch.equal(loaded.preprocess(image), expected[path])


def test_grey_images_held_in_memory_get_the_input_a_grey_file_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grey = [random_image("L", 50, 37, seed) for seed in range(3)]
    for i, image in enumerate(grey):
        image.save(tmp_path / f"{i}.png")
    pixels = torch.stack([torch.from_numpy(np.array(image))[None] for image in grey])
    split = LabelledImages(pixels, torch.tensor([0, 1, 0]))
    dataset = InMemoryDataset(
        {"train": split, "val": split}, ["a", "b"], 37, (0.4,) * 3, (0.2,) * 3
    )
    options = dict(image_size=16, batch_size=2, device=CPU, train=False)

    in_memory = torch.cat([x for x, _ in make_loader(dataset, "val", **options)])
    streamed = make_loader(dataset, "val", **options, in_memory_setting="false")
    assert isinstance(streamed, StreamLoader)  # repeats the grey channel to 3 before resizing
    assert in_memory.shape == (3, 3, 16, 16)
    assert torch.equal(in_memory, torch.cat([x for x, _ in streamed]))

    record = checkpoint_record(eval_preprocessing(dataset, 16).to_record())
    assert record["channels"] == 1
    loaded = InferenceModel(nn.Identity(), dataset.class_names, record, {})
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    predicted = predicted_inputs(loaded, paths, monkeypatch)
    assert all(
        torch.equal(predicted[path], row) for path, row in zip(paths, in_memory, strict=True)
    )


def test_the_record_round_trips_and_names_what_it_cannot_read() -> None:
    dataset = SimpleNamespace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), splits={})
    preprocessing = eval_preprocessing(dataset, 224, "imagenet")
    assert preprocessing.resize_short_side == 256 and preprocessing.input_shape == (3, 224, 224)
    record = preprocessing.to_record()
    assert record == {
        "image_size": 224,
        "resize_short_side": 256,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
        "channels": 3,
        "interpolation": "bilinear",
    }
    assert EvalPreprocessing.from_record(record) == preprocessing
    assert eval_preprocessing(dataset, 32, "cifar").resize_short_side is None
    with pytest.raises(UserError, match="val_crop_size"):
        EvalPreprocessing.from_record({**record, "val_crop_size": 200})
    with pytest.raises(UserError, match="lacks mean"):
        EvalPreprocessing.from_record({"image_size": 8, "std": [1.0]})
    loaded = InferenceModel(nn.Identity(), ["a"], record, {})
    assert loaded.example_input(batch=2).shape == (2, 3, 224, 224)


def test_single_images_and_batches_get_the_same_input() -> None:
    dataset = SimpleNamespace(mean=(0.5,) * 3, std=(0.25,) * 3, splits={})
    images = torch.randint(0, 256, (4, 3, 37, 50), dtype=torch.uint8)
    for augment in ("none", "imagenet"):
        preprocessing = eval_preprocessing(dataset, 24, augment)
        batch = preprocessing(images)
        assert batch.shape == (4, 3, 24, 24) and batch.dtype == torch.float32
        assert all(
            torch.equal(preprocessing(image), row) for image, row in zip(images, batch, strict=True)
        )

"""Training and evaluation sizes (`data.train_crop_size`, `data.val_resize_size`,
`data.val_crop_size`, `data.interpolation`, `data.rrc_scale`) and repeated augmentation
(`data.repeated_aug`): what the checkpoint records, every evaluation path alike, and epochs that
keep their steps and resume to the bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from cnn_train.build import build_model_and_data, split_loader
from cnn_train.checkpoint import load_checkpoint
from cnn_train.config_checks import check_train_config
from cnn_train.data import InMemoryDataset, LabelledImages, make_loader
from cnn_train.data.order import batch_count, pass_indices
from cnn_train.data.policies import Augmentation, PolicySettings
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.inference import InferenceModel
from tests.helpers import compose_config, run_cli
from tests.helpers.eval_inputs import by_file, predicted_inputs, write_folder
from tests.helpers.runs import assert_same_state

CPU = torch.device("cpu")
SIZES = [
    "data.augment=imagenet",
    "data.train_crop_size=16",
    "data.val_resize_size=30",
    "data.val_crop_size=24",
    "data.interpolation=bicubic",
    "data.rrc_scale=[0.25,1.0]",
]


# --- repeated augmentation ---------------------------------------------------------------------


def test_each_pick_appears_n_times_and_the_pass_keeps_its_length() -> None:
    plain = pass_indices(100, train=True, batch_size=10, seed=4, epoch=1)
    repeated = pass_indices(100, train=True, batch_size=10, seed=4, epoch=1, repeats=3)
    assert len(repeated) == len(plain) == 100
    counts = torch.bincount(repeated, minlength=100)
    assert int((counts > 0).sum()) == 34  # ceil(100 / 3) distinct images
    assert sorted(counts[counts > 0].tolist())[1:] == [3] * 33  # the last pick is cut to fit
    assert torch.equal(repeated[:3], plain[:1].repeat(3))  # the same picks, repeated in place


def test_the_copies_of_an_image_land_on_different_ranks() -> None:
    options = {"train": True, "batch_size": 4, "seed": 1, "epoch": 2, "world_size": 4}
    shards = [pass_indices(96, rank=rank, repeats=4, **options) for rank in range(4)]
    for shard in shards:
        assert len(set(shard.tolist())) == len(shard)  # no image twice on one rank
    assert torch.equal(shards[0], shards[3])  # each rank sees every pick, once
    plain = [batch_count(96, train=True, batch_size=4, rank=r, world_size=4) for r in range(4)]
    assert [len(shard) // 4 for shard in shards] == plain


def test_repetition_repeats_what_the_balanced_sampler_picks() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    options = {"train": True, "batch_size": 10, "seed": 2, "epoch": 0, "balanced_by": labels}
    picked = pass_indices(100, **options)
    repeated = pass_indices(100, repeats=2, **options)
    assert torch.equal(repeated, picked[:50].repeat_interleave(2))
    assert 0.3 < float((labels[repeated] == 1).float().mean()) < 0.7


@pytest.mark.parametrize("path", ["true", "false"])
def test_copies_are_augmented_differently_and_steps_stay_the_same(path: str) -> None:
    images = torch.randint(0, 256, (40, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    split = LabelledImages(images.to(torch.uint8), torch.arange(40) % 2)
    dataset = InMemoryDataset(
        {"train": split, "val": split}, ["a", "b"], 16, (0.5,) * 3, (0.2,) * 3
    )

    def loader(repeats: int):
        augmentation = Augmentation(policies=PolicySettings("trivialaugment"), repeats=repeats)
        options = {"image_size": 16, "batch_size": 8, "device": CPU, "train": True}
        return make_loader(
            dataset, "train", **options, augment="cifar", in_memory_setting=path,
            augmentation=augmentation,
        )  # fmt: skip

    repeated = loader(2)
    assert len(repeated) == len(loader(1)) == 5
    batch = next(iter(repeated))[0]
    assert all(not torch.equal(batch[i], batch[i + 1]) for i in range(0, 8, 2))


# --- sizes and the checkpoint's record -----------------------------------------------------------


def test_the_record_carries_sizes_and_interpolation_and_old_records_load() -> None:
    preprocessing = EvalPreprocessing(24, (0.5,) * 3, (0.2,) * 3, 3, 30, "bicubic")
    record = json.loads(json.dumps(preprocessing.to_record()))
    assert record["resize_short_side"] == 30 and record["interpolation"] == "bicubic"
    assert EvalPreprocessing.from_record(record) == preprocessing
    old = {key: value for key, value in record.items() if key != "interpolation"}
    assert EvalPreprocessing.from_record(old).interpolation == "bilinear"
    with pytest.raises(UserError, match="interpolation one of bilinear, bicubic"):
        EvalPreprocessing.from_record({**record, "interpolation": "lanczos"})
    image = torch.randint(0, 256, (3, 37, 50), dtype=torch.uint8)
    bilinear = EvalPreprocessing.from_record(old)
    assert preprocessing(image).shape == (3, 24, 24)
    assert not torch.equal(preprocessing(image), bilinear(image))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.rrc_scale=[0.9,0.2]"], r"data\.rrc_scale=\[0\.9, 0\.2\] must rise"),
        (["data.val_resize_size=20", "data.val_crop_size=24"], "below the evaluation crop"),
        (["data.val_crop_size=24", "data.image_size=32"], "differ; the evaluation crop is"),
    ],
)
def test_sizes_that_contradict_each_other_are_refused(overrides: list[str], message: str) -> None:
    cfg = compose_config("train", ["data=synthetic", "data.augment=imagenet", *overrides])
    with pytest.raises(UserError, match=message):
        check_train_config(cfg)


def test_the_installed_cli_refuses_a_falling_rrc_scale_in_one_line(tmp_path: Path) -> None:
    args = ["data=synthetic", "data.augment=imagenet", "data.rrc_scale=[1.0,0.5]"]
    done = run_cli("cnn-train", *args, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.rrc_scale=[1.0, 0.5] must rise")


def test_a_training_crop_below_the_models_minimum_is_refused() -> None:
    cfg = compose_config(
        "train", ["data=synthetic", "model=alexnet", "data.augment=cifar", "data.train_crop_size=8"]
    )
    with pytest.raises(UserError, match=r"data\.train_crop_size=8; use data\.train_crop_size="):
        build_model_and_data(cfg.model, cfg.data)


def test_a_small_training_crop_trains_and_every_eval_path_matches_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_folder(tmp_path / "tree")
    cfg = compose_config(
        "train",
        [
            "data=folder",
            f"data.root={tmp_path / 'tree'}",
            "data.num_workers=0",
            "data.batch_size=2",
            "trainer.epochs=1",
            "device=cpu",
            "tracking.graph=false",
            *SIZES,
        ],
    )
    run_training(cfg, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(checkpoint)
    assert state["preprocessing"]["image_size"] == 24
    assert state["preprocessing"]["resize_short_side"] == 30
    assert state["preprocessing"]["interpolation"] == "bicubic"

    built = build_model_and_data(cfg.model, cfg.data)
    assert built.image_size == 24
    paths = built.dataset.splits["val"].paths
    validation = by_file(split_loader(built, "val", 3, CPU, train=False), paths)
    train_batch = next(iter(split_loader(built, "train", 2, CPU, train=True)))[0]
    assert train_batch.shape == (2, 3, 16, 16)
    # cnn-predict and cnn-export rebuild the preprocessing from the checkpoint's record
    loaded = InferenceModel(nn.Identity(), built.dataset.class_names, state["preprocessing"], {})
    assert loaded.example_input().shape == (2, 3, 24, 24)
    for path in paths:
        if path.endswith(".png"):  # Pillow decodes PNGs as the loaders do
            with Image.open(path) as image:
                assert torch.equal(loaded.preprocess(image), validation[path])
    predicted = predicted_inputs(loaded, paths, monkeypatch)
    assert all(torch.equal(predicted[path], validation[path]) for path in paths)


def test_a_resumed_run_with_policies_and_repeats_is_bitwise_equal(train_config, tmp_path: Path):
    settings = (
        "data.augment=cifar",
        "data.auto_augment=randaugment",
        "data.random_erase=0.5",
        "data.repeated_aug=2",
        "data.train_samples=32",
        "data.val_samples=16",
        "scheduler=none",  # the LR of a run cut short stays the straight run's
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_training(train_config(*settings, "trainer.epochs=2"), straight)
    run_training(train_config(*settings, "trainer.epochs=1"), resumed)
    run_training(train_config(*settings, "trainer.epochs=2", "resume=auto"), resumed)
    assert_same_state(straight, resumed)

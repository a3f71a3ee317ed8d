"""The packaged config tree composes, and bad values fail before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from cnn_train.errors import UserError
from cnn_train.schema import validate_train
from tests.conftest import compose_config

CONFIGS = Path(__file__).parents[1] / "configs"


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("model", group_options("model"))
@pytest.mark.parametrize("data", group_options("data"))
def test_every_model_and_data_pair_composes(model: str, data: str) -> None:
    cfg = compose_config("train", [f"model={model}", f"data={data}"])
    validate_train(cfg)
    assert cfg.model.name == model and cfg.data.name == data


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "device"])
def test_every_option_of_every_group_composes(group: str) -> None:
    for option in group_options(group):
        cfg = compose_config("train", [f"{group}={option}"])
        validate_train(cfg)
        assert cfg[group].name == option


def test_the_default_job_is_resnet34_on_digits() -> None:
    cfg: DictConfig = compose_config("train", [])
    assert (cfg.model.name, cfg.data.name, cfg.device.name) == ("resnet34", "digits", "auto")
    assert cfg.trainer.precision == "auto" and cfg.resume is None


@pytest.mark.parametrize(
    "override", ["trainer.epochs=abc", "optimizer.lr=fast", "data.batch_size=1.5", "seed=x"]
)
def test_wrong_types_fail_at_composition(override: str) -> None:
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0]):
        compose_config("train", [override])


def test_unknown_keys_fail_at_composition() -> None:
    with pytest.raises(ConfigCompositionException):
        compose_config("train", ["optimizer.momentun=0.9"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("data.batch_size=-4", "data.batch_size"),
        ("data.image_size=0", "data.image_size"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay"),
        ("trainer.precision=fp64", "trainer.precision"),
        ("model.variant=tiny", "model.variant"),
        ("model.dropout=1.5", "model.dropout"),
        ("device.name=tpu", "device.name"),
    ],
)
def test_bad_values_raise_one_line_naming_the_key(override: str, key: str) -> None:
    cfg = compose_config("train", [override])
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as raised:
        validate_train(cfg)
    assert "\n" not in str(raised.value)


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigCompositionException) as raised:
        compose_config("train", ["model=vgg17"])
    assert "Could not find 'model/vgg17'" in str(raised.value)

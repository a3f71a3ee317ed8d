"""The packaged config tree composes, and bad values fail before anything runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from cnn_train.config_checks import check_train_config
from cnn_train.errors import UserError
from tests.helpers import compose_config

CONFIGS = Path(__file__).parents[1] / "configs"


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("model", group_options("model"))
@pytest.mark.parametrize("data", group_options("data"))
def test_every_model_and_data_pair_composes(model: str, data: str) -> None:
    cfg = compose_config("train", [f"model={model}", f"data={data}"])
    check_train_config(cfg)
    assert cfg.model.name == model and cfg.data.name == data


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "device"])
def test_every_option_of_every_group_composes(group: str) -> None:
    for option in group_options(group):
        cfg = compose_config("train", [f"{group}={option}"])
        check_train_config(cfg)
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


def test_a_model_without_dropout_has_no_dropout_key() -> None:
    assert "dropout" not in compose_config("train", ["model=resnet34"]).model
    assert compose_config("train", ["model=vgg16"]).model.dropout == 0.5
    with pytest.raises(ConfigCompositionException, match=r"model\.dropout"):
        compose_config("train", ["model=resnet34", "model.dropout=0.2"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+foo=bar", "foo"),
        ("+trainer.epoch=5", "trainer.epoch"),
        ("+optimizer.momentun=0.5", "optimizer.momentun"),
        ("+tracking.images=false", "tracking.images"),
    ],
)
def test_keys_added_with_plus_that_no_schema_has_are_refused(override: str, key: str) -> None:
    cfg = compose_config("train", [override])
    with pytest.raises(UserError, match="unknown key " + re.escape(key)):
        check_train_config(cfg)


def test_the_schema_holds_every_default_and_the_yaml_names_only_changes() -> None:
    """A group YAML sets only `name` and values that differ from its schema's defaults."""
    import yaml

    from cnn_train.schema import SCHEMAS

    for group, options in SCHEMAS.items():
        for path in sorted((CONFIGS / group).glob("*.yaml")):
            text = yaml.safe_load(path.read_text())
            schema_name = text["defaults"][0].split("/")[-1].split("@")[0]
            defaults = options[schema_name]()
            for key, value in text.items():
                if key in ("defaults", "name") or value == "???":
                    continue
                assert getattr(defaults, key) != value, f"{path.name}: {key} repeats the default"


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
        ("model=vgg16 model.dropout=1.5", "model.dropout"),
        ("device.name=tpu", "device.name"),
    ],
)
def test_bad_values_raise_one_line_naming_the_key(override: str, key: str) -> None:
    cfg = compose_config("train", override.split())
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as raised:
        check_train_config(cfg)
    assert "\n" not in str(raised.value)


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigCompositionException) as raised:
        compose_config("train", ["model=vgg17"])
    assert "Could not find 'model/vgg17'" in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "lr"),
    [
        (["model=alexnet"], 0.01),  # configs/model_recipe/alexnet_sgd.yaml
        (["model=alexnet2012"], 0.01),
        (["model=resnet34"], 0.02),  # no recipe: SGD's default
        (["model=alexnet", "optimizer=adamw"], 0.001),  # the recipe is for SGD only
        (["model=alexnet", "optimizer.lr=0.05"], 0.05),  # the command line wins
    ],
)
def test_a_model_recipe_applies_to_its_model_and_optimizer_only(
    overrides: list[str], lr: float
) -> None:
    assert compose_config("train", overrides).optimizer.lr == lr


@pytest.mark.parametrize(
    ("overrides", "smoothing"),
    [
        ([], 0.1),  # the default job: configs/model_recipe/resnet34_sgd.yaml
        (["model=vgg16"], 0.0),
        (["optimizer=adamw"], 0.0),
        (["trainer.label_smoothing=0"], 0.0),
    ],
)
def test_the_default_job_smooths_its_labels(overrides: list[str], smoothing: float) -> None:
    assert compose_config("train", overrides).trainer.label_smoothing == smoothing

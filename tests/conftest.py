"""Shared fixtures (the helpers they use live in tests/helpers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig

from tests.helpers import QUICK, compose_config


@pytest.fixture
def train_config() -> Callable[..., DictConfig]:
    """Compose a quick CPU training config (synthetic 8 px data, one epoch) plus overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", [*QUICK, *overrides])

    return make

"""Checks of operator arguments that are not templated, run in ``__init__`` so DAG parsing fails early."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clarky_provider.exceptions import ClarkyConfigError


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    options = tuple(choices)
    if value not in options:
        raise ClarkyConfigError(f"{name}={value!r}; choose one of {', '.join(map(repr, options))}.")


def check_at_least_one(name: str, value: int) -> None:
    if value < 1:
        raise ClarkyConfigError(f"{name} must be at least 1, got {value}.")

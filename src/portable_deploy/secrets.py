"""STUB for the host-side work; replaced by the config/sources implementation on merge."""

from __future__ import annotations

from dataclasses import dataclass

from .command import Secret


@dataclass(frozen=True)
class SecretValue:
    name: str
    value: Secret
    units: tuple[str, ...]
    environment: str | None
    digest: str


def resolve(cfg: object, salt: bytes) -> list[SecretValue]:  # stub
    return []


def check_sources(cfg: object) -> None:  # stub
    return None

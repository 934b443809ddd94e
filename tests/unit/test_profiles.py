"""The tool's portable profile: what it grants (nothing) and that the README shows its text."""

from __future__ import annotations

from pathlib import Path

from portable_deploy import profiles
from portable_deploy.units import directives

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for section, key, value in directives(profiles.text(name)):
        assert section == "Service"
        out.setdefault(key, []).append(value)
    return out


def test_pd_hardened_grants_no_capability_and_one_address_family() -> None:
    """Empty capability sets, no privilege gain, AF_UNIX only, a system-call allow list."""
    s = _settings("pd-hardened")
    assert s["CapabilityBoundingSet"] == [""] and s["AmbientCapabilities"] == [""]
    assert s["NoNewPrivileges"] == ["yes"] and s["PrivateUsers"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"] and s["DynamicUser"] == ["yes"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert not any("dbus" in v for v in s["BindReadOnlyPaths"])


def test_readme_shows_the_profile_text_as_shipped() -> None:
    """The README's copy of pd-hardened is the file the tool installs, byte for byte."""
    assert f"```ini\n{profiles.text('pd-hardened')}```" in README.read_text()


def test_only_own_profiles_have_text() -> None:
    """A stock profile name is not the tool's: it has no text to install."""
    assert profiles.is_own("pd-hardened") and not profiles.is_own("default")
    assert profiles.host_path("pd-hardened") == (
        "/etc/systemd/portable/profile/pd-hardened/service.conf"
    )

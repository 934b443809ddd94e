from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from portable_deploy.errors import DeployError
from portable_deploy.manifest import Manifest, changed_paths

SHA = "0123456789abcdef" * 4


def _manifest(**changes: Any) -> Manifest:
    base = Manifest(
        name="demo",
        version="1.2.0",
        image_sha256=SHA,
        image_size=4096,
        compression="zstd",
        git_commit="c0ffee" * 6 + "abcd",
        git_dirty=False,
        files={
            "usr/bin/demo": "sha256:" + "a" * 64,
            "etc/demo-link.conf": "symlink:demo.conf",
            "usr/lib/systemd/system/demo.service": "sha256:" + "b" * 64,
        },
        units=("demo.service",),
        unit_info={"demo.service": {"kind": "service", "activates": None, "paths": []}},
    )
    return dataclasses.replace(base, **changes)


def test_json_round_trips() -> None:
    """from_json(to_json(m)) gives back an equal manifest."""
    m = _manifest()
    assert Manifest.from_json(m.to_json(), "test") == m


def test_a_compression_level_is_recorded_only_when_set() -> None:
    """The level an image was packed at round-trips; the default leaves no key (manifests of
    builds at the compressor's default are as they were)."""
    m = _manifest(compression_level=3)
    assert json.loads(m.to_json())["compression_level"] == 3
    assert Manifest.from_json(m.to_json(), "test") == m
    assert "compression_level" not in json.loads(_manifest().to_json())


def test_json_has_the_documented_top_level_keys() -> None:
    """The JSON carries format 1, the release names, image identity, git, files and units."""
    obj = json.loads(_manifest().to_json())
    assert obj["format"] == 1
    assert obj["release"] == "demo_1.2.0"
    assert obj["image"] == "demo_1.2.0.raw"
    assert obj["git"] == {"commit": "c0ffee" * 6 + "abcd", "dirty": False}
    assert set(obj) == {
        "format",
        "name",
        "version",
        "release",
        "image",
        "image_sha256",
        "image_size",
        "compression",
        "git",
        "files",
        "units",
        "unit_info",
    }


def test_json_is_canonical_text() -> None:
    """Output is sorted, indented by two spaces and ends with one newline, whatever the input order."""
    m = _manifest()
    shuffled = _manifest(files=dict(reversed(list(m.files.items()))))
    assert shuffled.to_json() == m.to_json()
    text = m.to_json()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_image_sha256_line_is_unique_for_grep() -> None:
    """`grep -F '"image_sha256": "<hex>"'` finds exactly one line, even if a file is so named."""
    m = _manifest(files={"image_sha256": "sha256:" + SHA, "x": "symlink:" + SHA})
    lines = [line for line in m.to_json().splitlines() if f'"image_sha256": "{SHA}"' in line]
    assert lines == [f'  "image_sha256": "{SHA}",']


def test_names_derive_from_name_and_version() -> None:
    """release, image_name and manifest_name follow NAME_VERSION."""
    m = _manifest()
    assert (m.release, m.image_name, m.manifest_name) == (
        "demo_1.2.0",
        "demo_1.2.0.raw",
        "demo_1.2.0.manifest.json",
    )


def test_manifest_is_immutable() -> None:
    """The files mapping of a manifest cannot be changed in place."""
    m = _manifest()
    with pytest.raises(TypeError):
        m.files["usr/bin/demo"] = "sha256:" + "c" * 64  # type: ignore[index]


def _edited(**changes: Any) -> str:
    obj = json.loads(_manifest().to_json())
    for key, value in changes.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{not json", "not valid JSON", id="not-json"),
        pytest.param("[]", "top level is not an object", id="array"),
        pytest.param(_edited(format=2), "format 2 is not supported", id="format"),
        pytest.param(_edited(image_sha256=None), "missing key 'image_sha256'", id="missing-sha"),
        pytest.param(_edited(image_sha256="ABC"), "64 lower-case hex", id="bad-sha"),
        pytest.param(_edited(image_size="1"), "'image_size' has the wrong type", id="size-type"),
        pytest.param(_edited(git={"commit": None}), "missing key git.'dirty'", id="git"),
        pytest.param(_edited(files={"a": "md5:x"}), "files['a']", id="file-value"),
        pytest.param(_edited(image="other.raw"), "'image' is 'other.raw'", id="derived"),
        pytest.param(
            _edited(compression_level="3"), "'compression_level' has the wrong type", id="level"
        ),
        pytest.param(
            _edited(units=["demo.service", "sshd.service"]),
            "'units' names 'sshd.service', which is not a unit file of 'demo'",
            id="foreign-unit",
        ),
        pytest.param(
            _edited(unit_info={"demo.mount": {}}),
            "'unit_info' names 'demo.mount'",
            id="unattachable-unit-info",
        ),
    ],
)
def test_invalid_manifest_is_a_deploy_error_naming_the_source(text: str, message: str) -> None:
    """Broken JSON, missing keys, wrong types or format raise DeployError naming the source."""
    with pytest.raises(DeployError) as info:
        Manifest.from_json(text, "host1:/var/lib/x.manifest.json")
    assert info.value.message.startswith("host1:/var/lib/x.manifest.json: ")
    assert message in info.value.message
    assert info.value.hint


def test_changed_paths_lists_added_removed_and_changed() -> None:
    """changed_paths holds paths added, removed or with another hash, and no unchanged path."""
    old = _manifest()
    files = dict(old.files)
    files["usr/bin/demo"] = "sha256:" + "c" * 64
    files["etc/demo-link.conf"] = "symlink:other.conf"
    del files["usr/lib/systemd/system/demo.service"]
    files["usr/bin/new"] = "sha256:" + "d" * 64
    assert changed_paths(old, _manifest(files=files)) == {
        "usr/bin/demo",
        "etc/demo-link.conf",
        "usr/lib/systemd/system/demo.service",
        "usr/bin/new",
    }
    assert changed_paths(old, _manifest(version="9")) == frozenset()

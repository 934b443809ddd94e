"""Delta uploads: the index, the plan, the stream, and the host's own scripts (inventory and
assembly) run here with the real sh, dd and sha256sum, on real files."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest

from portable_deploy import facts
from portable_deploy.chunks import AVERAGE, RECORD, Copy, Data, Index, Source, plan
from portable_deploy.commands import delta
from portable_deploy.transfer import cached, remember


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def old_new(tmp_path: Path) -> tuple[Path, Path]:
    """An old image, and a new one: the same with 30 KB changed in the middle, 5 KB inserted
    near the start (everything after it shifts) and 20 KB appended."""
    old = _random(600_000, 1)
    new = old[:50_000] + _random(5_000, 2) + old[50_000:300_000]
    new += _random(30_000, 3) + old[330_000:] + _random(20_000, 4)
    return _write(tmp_path / "old.raw", old), _write(tmp_path / "new.raw", new)


def test_an_index_round_trips_and_covers_the_file(old_new: tuple[Path, Path]) -> None:
    index = Index.of_file(old_new[0])
    assert index.size == old_new[0].stat().st_size
    assert Index.from_bytes(index.to_bytes()) == index
    assert len(index.to_bytes()) == RECORD.size * len(index.records)
    assert all(AVERAGE // 4 <= n <= AVERAGE * 4 for _, n in index.records[:-1])
    with pytest.raises(ValueError, match="12 bytes a chunk"):
        Index.from_bytes(b"x" * 13)


def test_an_empty_file_has_an_empty_index(tmp_path: Path) -> None:
    assert Index.of_file(_write(tmp_path / "e", b"")).records == ()


def test_the_plan_sends_about_what_changed(old_new: tuple[Path, Path]) -> None:
    old, new = (Index.of_file(p) for p in old_new)
    recipe = plan("app_2", "sha", new, [Source("app_1", old)])
    changed = 5_000 + 30_000 + 20_000
    assert changed <= recipe.new_bytes <= changed + 6 * AVERAGE * 4
    assert recipe.reused_bytes + recipe.new_bytes == new.size
    assert recipe.reused_from() == {"app_1": recipe.reused_bytes}
    # Unchanged stretches are one copy run each, not one per chunk.
    copies = [r for r in recipe.runs if isinstance(r, Copy)]
    assert len(copies) <= 6


def test_without_sources_everything_is_new(old_new: tuple[Path, Path]) -> None:
    new = Index.of_file(old_new[1])
    recipe = plan("app_2", "sha", new, [])
    assert [type(r) for r in recipe.runs] == [Data]
    assert recipe.new_bytes == new.size
    assert recipe.delta_size == new.size + RECORD.size * len(new.records)


def test_an_unchanged_image_is_all_copied(old_new: tuple[Path, Path]) -> None:
    old = Index.of_file(old_new[0])
    recipe = plan("app_2", "sha", old, [Source("app_1", old)])
    assert recipe.runs == (Copy("app_1", 0, old.size, 0, len(old.records)),)
    assert recipe.delta_size == 0


def test_a_chunk_in_several_sources_continues_the_current_run(
    old_new: tuple[Path, Path],
) -> None:
    """The first source is preferred, and a run keeps its source while it can."""
    old, new = (Index.of_file(p) for p in old_new)
    recipe = plan("app_2", "sha", new, [Source("app_9", old), Source("app_1", old)])
    assert set(recipe.reused_from()) == {"app_9"}


def test_the_recipe_id_changes_with_the_plan(old_new: tuple[Path, Path]) -> None:
    old, new = (Index.of_file(p) for p in old_new)
    a = plan("app_2", "sha", new, [Source("app_1", old)])
    assert a.id == plan("app_2", "sha", new, [Source("app_1", old)]).id
    assert a.id != plan("app_2", "sha", new, []).id
    assert a.id != plan("app_3", "sha", new, [Source("app_1", old)]).id


def test_the_stream_is_records_then_bytes_of_each_new_run(
    old_new: tuple[Path, Path],
) -> None:
    old, new = (Index.of_file(p) for p in old_new)
    recipe = plan("app_2", "sha", new, [Source("app_1", old)])
    data = old_new[1].read_bytes()
    expected = b"".join(
        r.records + data[r.offset : r.offset + r.length] for r in recipe.runs if isinstance(r, Data)
    )
    stream = recipe.delta(old_new[1])
    assert stream.read() == expected
    # Any place: reads from a seek, in pieces that cross the parts' borders.
    for start in (0, 1, 11, 12, 5_000, len(expected) - 1):
        stream.seek(start)
        got = b""
        while chunk := stream.read(777):
            got += chunk
        assert got == expected[start:]
    stream.close()


def test_the_uploaded_stream_is_the_recipe_then_the_delta(old_new: tuple[Path, Path]) -> None:
    old, new = (Index.of_file(p) for p in old_new)
    recipe = plan("app_2", "sha", new, [Source("app_1", old)])
    head = recipe.text().encode()
    with recipe.delta(old_new[1], head) as s, recipe.delta(old_new[1]) as d:
        whole = s.read(len(head) + recipe.delta_size)
        assert whole == head + d.read()
        s.seek(len(head) - 3)
        assert s.read(10) == whole[len(head) - 3 : len(head) + 7]


def test_the_index_cache_keeps_by_digest_and_is_bounded(
    tmp_path: Path, old_new: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    index = Index.of_file(old_new[0])
    assert cached(index.digest, tmp_path) is None
    remember(index, tmp_path)
    assert cached(index.digest, tmp_path) == index
    (tmp_path / f"{index.digest}.idx").write_bytes(b"\0" * 12)  # damaged: not trusted
    assert cached(index.digest, tmp_path) is None
    (tmp_path / f"{index.digest}.idx").write_bytes(b"\0" * 13)  # not even records
    assert cached(index.digest, tmp_path) is None
    monkeypatch.setattr("portable_deploy.transfer.CACHE_KEEP", 3)
    for n in range(5):
        remember(Index(((bytes([n]) * 8, n + 1),)), tmp_path)
    assert len(list(tmp_path.glob("*.idx"))) == 3


# -- the host's side, run here with the same coreutils a Debian host has -------------------------


class Host:
    """A directory laid out as a host: portables/, releases/, incoming/, partial/."""

    def __init__(self, root: Path) -> None:
        self.portables, self.releases = root / "portables", root / "releases"
        self.incoming, self.partial = root / "incoming", root / "partial"
        for d in (self.portables, self.releases, self.incoming, self.partial):
            d.mkdir(parents=True)

    def keep(self, release: str, image: Path) -> Index:
        (self.portables / f"{release}.raw").write_bytes(image.read_bytes())
        index = Index.of_file(image)
        (self.releases / f"{release}.index").write_bytes(index.to_bytes())
        return index

    def run(self, argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def _assemble(
    host: Host, release: str, image: Path, sources: list[Source], index_sha: str = ""
) -> tuple[int, str]:
    new = Index.of_file(image)
    recipe = plan(release, hashlib.sha256(image.read_bytes()).hexdigest(), new, sources)
    head = recipe.text().encode()
    stream = host.partial / f"{release}.{recipe.id}.delta"
    with recipe.delta(image, head) as s:
        stream.write_bytes(s.read(len(head) + recipe.delta_size))
    command = delta.assemble(
        str(host.incoming / f"{release}.raw"),
        str(host.incoming / f"{release}.index"),
        str(stream),
        len(head),
        index_sha or new.digest,
        str(host.releases),
        str(host.portables),
    )
    done = host.run(("sh", "-c", command.render(reveal=True)))
    return done.returncode, done.stdout


def test_the_host_assembles_the_new_image_from_a_kept_one(
    tmp_path: Path, old_new: tuple[Path, Path]
) -> None:
    host = Host(tmp_path / "host")
    old_index = host.keep("app_1", old_new[0])
    code, out = _assemble(host, "app_2", old_new[1], [Source("app_1", old_index)])
    assert (code, out) == (0, "")
    assert (host.incoming / "app_2.raw").read_bytes() == old_new[1].read_bytes()
    assert (host.incoming / "app_2.index").read_bytes() == Index.of_file(old_new[1]).to_bytes()
    assert list(host.partial.iterdir()) == []  # the stream is used up
    assert not list(host.incoming.glob("*.part"))


def test_a_damaged_kept_image_gives_an_image_the_check_refuses(
    tmp_path: Path, old_new: tuple[Path, Path]
) -> None:
    """The assembly copies what the kept image holds: the result's sha256 is not the signed one,
    which trust.check_release (run right after it) refuses."""
    host = Host(tmp_path / "host")
    old_index = host.keep("app_1", old_new[0])
    kept = host.portables / "app_1.raw"
    data = bytearray(kept.read_bytes())
    data[400_000] ^= 0xFF
    kept.write_bytes(bytes(data))
    assert _assemble(host, "app_2", old_new[1], [Source("app_1", old_index)])[0] == 0
    assert (host.incoming / "app_2.raw").read_bytes() != old_new[1].read_bytes()


def test_an_assembly_that_cannot_read_a_source_or_gets_another_index_names_nothing(
    tmp_path: Path, old_new: tuple[Path, Path]
) -> None:
    host = Host(tmp_path / "host")
    old_index = host.keep("app_1", old_new[0])
    code, out = _assemble(
        host, "app_2", old_new[1], [Source("app_1", old_index)], index_sha="0" * 64
    )
    assert code == delta.MISMATCH and out.startswith("index ")
    assert list(host.incoming.iterdir()) == []
    (host.portables / "app_1.raw").unlink()
    code, _ = _assemble(host, "app_2", old_new[1], [Source("app_1", old_index)])
    assert code == delta.MISMATCH
    assert list(host.incoming.iterdir()) == []


def test_the_inventory_lists_images_indexes_and_streams(
    tmp_path: Path, old_new: tuple[Path, Path]
) -> None:
    host = Host(tmp_path / "host")
    index = host.keep("app_1", old_new[0])
    (host.releases / "app_0.index").write_bytes(b"")  # its image was pruned: not a source
    (host.partial / "app_2.0123456789abcdef.delta").write_bytes(b"x" * 1234)
    command = delta.inventory(
        str(host.portables / "app_1.raw"),
        str(host.releases),
        str(host.partial),
        str(host.portables),
    )
    out = host.run(("sh", "-c", command.render(reveal=True))).stdout
    found = facts.inventory(out)
    assert found.image == hashlib.sha256(old_new[0].read_bytes()).hexdigest()
    assert found.indexes == {"app_1": index.digest}
    assert found.partials == {"app_2.0123456789abcdef.delta": 1234}
    empty = facts.inventory(
        host.run(
            ("sh", "-c", delta.inventory("/nonexistent", "/nonexistent", "/x").render())
        ).stdout
    )
    assert (empty.image, empty.indexes, empty.partials) == (None, {}, {})


def test_prepare_keeps_only_the_stream_being_resumed(tmp_path: Path) -> None:
    host = Host(tmp_path / "host")
    for name in ("app_2.aaaa.delta", "app_2.bbbb.delta"):
        (host.partial / name).write_bytes(b"x")
    command = delta.prepare(
        str(host.partial), "app_2.bbbb.delta", str(host.incoming), str(host.releases)
    )
    assert host.run(("sh", "-c", command.render(reveal=True))).returncode == 0
    assert [p.name for p in host.partial.iterdir()] == ["app_2.bbbb.delta"]

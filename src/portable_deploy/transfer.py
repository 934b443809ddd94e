"""How a release's image reaches the host's staging directory: by delta (the default) or whole.

Delta: cut the image into chunks (``chunks``), plan against the indexes of the releases the host
keeps, send only the new chunks as one stream, and have the host assemble the image with ``dd``
and check its sha256 (``commands.delta``). A stream cut off part way stays on the host and the
next upload of the same plan resumes it. An assembly that does not give the planned image (a
damaged kept image) is reported, the damaged releases stop serving as sources, and the whole
image is sent instead. Either way the host ends with the image and its index in staging, or
neither under that name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import facts, failpoints, ui
from .chunks import RESEND, Index, Recipe, Source, plan
from .command import Command
from .commands import delta, files, trust
from .commands.layout import Layout
from .host import Progress, Remote, Result
from .release import Signed

#: Indexes kept on this machine (by digest), so a host's indexes are fetched at most once.
CACHE_KEEP = 64


def index_cache() -> Path:
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(home) / "portable-deploy" / "indexes"


def cached(digest: str, cache: Path) -> Index | None:
    try:
        index = Index.from_bytes((cache / f"{digest}.idx").read_bytes())
    except (OSError, ValueError):  # absent, or damaged: read from the host again
        return None
    return index if index.digest == digest else None


def remember(index: Index, cache: Path) -> None:
    """Keep INDEX in the cache (written atomically); the oldest beyond ``CACHE_KEEP`` go."""
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"{index.digest}.idx"
        if not path.exists():
            # Per thread too: a fleet's uploads plan side by side.
            tmp = path.with_suffix(f".tmp.{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(index.to_bytes())
            tmp.replace(path)
        else:
            path.touch()
        kept = sorted(cache.glob("*.idx"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[CACHE_KEEP:]:
            old.unlink(missing_ok=True)


def sources(
    host: Remote, layout: Layout, listed: dict[str, str], prefer: Sequence[str], cache: Path
) -> list[Source]:
    """The kept releases' indexes (from the cache, else read from the host once), the PREFER
    ones first (the live release is the likeliest to share chunks)."""
    order = [r for r in prefer if r in listed] + [r for r in listed if r not in prefer]
    found = []
    for release in order:
        index = cached(listed[release], cache)
        if index is None:
            try:
                index = Index.from_bytes(host.get(layout.index(release)))
            except ValueError:
                continue
            if index.digest != listed[release]:
                continue
            remember(index, cache)
        found.append(Source(release, index))
    return found


@dataclass(frozen=True)
class Planned:
    """A delta upload, planned: the recipe, its text (the head of the stream), the stream's path
    on the host, and where sending starts (after what an earlier upload of the same recipe left
    there)."""

    recipe: Recipe
    head: bytes
    stream: str
    start: int

    @property
    def total(self) -> int:
        """Bytes of the stream on the host: the recipe's text, then the delta."""
        return len(self.head) + self.recipe.delta_size


def plan_delta(
    host: Remote,
    layout: Layout,
    signed: Signed,
    inventory: facts.Inventory,
    prefer: Sequence[str],
    cache: Path | None = None,
) -> Planned:
    """Cut the image, match it against the host's kept releases (PREFER first), and see whether
    an earlier upload of this very plan left part of its stream on the host."""
    m, local = signed.manifest, signed.artifact.image
    cache = cache if cache is not None else index_cache()
    new = Index.of_file(local)
    remember(new, cache)
    # The image is the manifest's: checked when the release was read (release.check_local).
    recipe = plan(
        m.release, m.image_sha256, new, sources(host, layout, inventory.indexes, prefer, cache)
    )
    stream = layout.partial(m.release, recipe.id)
    head = recipe.text().encode()
    arrived = inventory.partials.get(stream.rsplit("/", 1)[-1], 0)
    total = len(head) + recipe.delta_size
    # Resume before the last chunk's worth of what arrived: a torn last write is sent again.
    start = max(0, arrived - RESEND) if arrived <= total else 0
    return Planned(recipe, head, stream, start)


def prepare(layout: Layout, planned: Planned) -> Command:
    """The directories an upload writes to, and no other plan's left-over stream."""
    name = planned.stream.rsplit("/", 1)[-1]
    return delta.prepare(layout.partial_dir, name, layout.incoming_dir, layout.releases_dir)


def send_delta(
    host: Remote,
    layout: Layout,
    signed: Signed,
    planned: Planned,
    steps: ui.Steps,
    check: Command,
) -> Result:
    """Stage the image and its index by delta, then CHECK them (the host-side check of the
    signed manifest, in the same command). An image that is not the signed one (a damaged kept
    image, a damaged stream) is reported and the whole image sent and checked instead. Returns
    the result of the last check."""
    m, recipe = signed.manifest, planned.recipe
    steps.info(_summary(recipe, len(planned.head), m.image_size, planned.start))
    with (
        recipe.delta(signed.artifact.image, planned.head) as data,
        steps.transfer(f"{m.image_name} -> {host.name}", planned.total) as progress,
    ):
        began = time.monotonic()
        host.put_stream(
            data, planned.total, planned.stream, planned.start, _halfway(progress, "upload")
        )
        took = time.monotonic() - began
    if not host.dry_run:
        sent = planned.total - planned.start
        steps.info(f"sent {ui.size(sent)} in {took:.1f}s ({ui.size(sent / max(took, 1e-3))}/s)")
    failpoints.reach("uploaded")
    assemble = delta.assemble(
        layout.incoming_image(m.release),
        layout.incoming_index(m.release),
        planned.stream,
        len(planned.head),
        recipe.index.digest,
        layout.releases_dir,
    )
    command = assemble.then(dataclasses.replace(check, mutates=host.dry_run))
    result = host.run(command, check=False)
    if result.ok or result.exit_code not in (delta.MISMATCH, trust.NOT_SIGNED_IMAGE):
        return result
    damaged = _damaged_sources(host, layout, recipe.sources())
    got = (result.stdout.strip().splitlines() or [""])[-1].removeprefix("index ")
    steps.warn(
        f"the image assembled on {host.name} is not {m.image_name} (sha256 {got[:16]}...)"
        + (f": kept image {', '.join(damaged)} is damaged" if damaged else "")
        + "; sending the whole image instead"
    )
    send_whole(host, layout, signed, recipe.index, steps)
    return host.run(dataclasses.replace(check, mutates=host.dry_run), check=False)


def send_whole(
    host: Remote, layout: Layout, signed: Signed, index: Index | None, steps: ui.Steps
) -> None:
    """Stage the whole image, and INDEX for later deltas."""
    m = signed.manifest
    with steps.transfer(f"{m.image_name} -> {host.name}", m.image_size) as progress:
        host.put(
            signed.artifact.image, layout.incoming_image(m.release), _halfway(progress, "upload")
        )
    if index is not None:
        data = index.to_bytes()
        host.put_stream(io.BytesIO(data), len(data), layout.incoming_index(m.release))


def _damaged_sources(host: Remote, layout: Layout, releases: Sequence[str]) -> list[str]:
    """Of RELEASES, the ones whose kept image no longer matches its signed manifest: their index
    is removed, so no later delta copies from them (a rollback to one refuses it anyway)."""
    damaged = []
    for release in releases:
        check = trust.image_matches_manifest(
            layout.image(release), layout.manifest(release), release
        )
        if not host.run(check, check=False).ok:
            damaged.append(release)
    if damaged:
        host.run(files.remove(*(layout.index(r) for r in damaged)))
    return damaged


def _summary(recipe: Recipe, recipe_bytes: int, image_size: int, start: int) -> str:
    reused = recipe.reused_from()
    text = (
        f"delta: {ui.size(recipe.new_bytes)} of {ui.size(image_size)} to send "
        f"({recipe.new_chunks} new chunks of {len(recipe.index.records)}, "
        f"plan and index {ui.size(recipe_bytes + recipe.delta_size - recipe.new_bytes)})"
    )
    if reused:
        text += "; reused " + ", ".join(f"{ui.size(n)} from {r}" for r, n in sorted(reused.items()))
    if start:
        text += f"; resuming after {ui.size(start)} already on the host"
    return text


def _halfway(progress: Progress, failpoint: str) -> Progress:
    """PROGRESS, and the failpoint FAILPOINT once half of the bytes are sent."""
    if not failpoints.armed(failpoint):
        return progress

    def update(done: int, total: int) -> None:
        progress(done, total)
        if 2 * done >= total:
            failpoints.reach(failpoint)

    return update

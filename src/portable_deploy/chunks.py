"""Delta uploads, the pure half: an image cut into content-defined chunks, its index, and the
recipe that rebuilds it on a host from the images the host already has plus the chunks it lacks.

The host runs no chunker: it keeps each release's index next to its manifest (the index the
deployer sent with that release), lists those indexes by digest, and this side plans from them.
The plan (``Recipe``) names byte ranges of kept images to copy with ``dd`` and the new chunks,
sent as one stream (``Recipe.delta``). The host checks what it assembled against the image's
sha256 before the image gets a release name; the signed manifest is checked after that, as for
any upload.

An index is binary, ``RECORD.size`` (12) bytes a chunk: the first 8 bytes of the chunk's sha256
and its length (big endian). Offsets are implied: a chunk starts where the one before it ends.
A truncated hash can collide; a collision makes a wrong image, which the host's sha256 check
refuses (the deploy then sends the whole image), so it costs bytes, never correctness.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

RECORD = struct.Struct(">8sI")

#: FastCDC's average chunk size (min a quarter, max four times): see the README's measurements.
AVERAGE = 4096
#: The most bytes a resumed upload sends again: one chunk at most (FastCDC's maximum).
RESEND = 4 * AVERAGE


@dataclass(frozen=True)
class Index:
    """An image's chunks, in order: (hash prefix, length) each."""

    records: tuple[tuple[bytes, int], ...]

    @classmethod
    def of_file(cls, path: Path, average: int = AVERAGE) -> Index:
        """Cut PATH with FastCDC 2020 (pyfastcdc) and hash every chunk."""
        from pyfastcdc import FastCDC

        cutter = FastCDC(average, min_size=average // 4, max_size=average * 4)
        if path.stat().st_size == 0:
            return cls(())
        return cls(
            tuple((hashlib.sha256(c.data).digest()[:8], c.length) for c in cutter.cut_file(path))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        if len(data) % RECORD.size:
            raise ValueError(f"an index is {RECORD.size} bytes a chunk, not {len(data)} bytes")
        return cls(tuple(RECORD.iter_unpack(data)))

    def to_bytes(self) -> bytes:
        return b"".join(RECORD.pack(h, n) for h, n in self.records)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def size(self) -> int:
        """The image's size: the sum of its chunks."""
        return sum(n for _, n in self.records)

    def offsets(self) -> list[int]:
        """Where each chunk starts in the image."""
        out, at = [], 0
        for _, n in self.records:
            out.append(at)
            at += n
        return out


@dataclass(frozen=True)
class Source:
    """A release the host has, with its index: what a new image may copy from."""

    release: str
    index: Index


@dataclass(frozen=True)
class Copy:
    """COUNT chunks the host takes from a kept release: LENGTH bytes of its image at OFFSET, and
    their index records from FIRST on."""

    release: str
    offset: int
    length: int
    first: int
    count: int

    def line(self) -> str:
        return f"c {self.release} {self.offset} {self.length} {self.first} {self.count}"


@dataclass(frozen=True)
class Data:
    """COUNT new chunks, LENGTH bytes at OFFSET of the new image: sent in the delta stream (their
    index records first, then their bytes)."""

    offset: int
    length: int
    records: bytes

    @property
    def count(self) -> int:
        return len(self.records) // RECORD.size

    def line(self) -> str:
        return f"d {self.length} {self.count}"


Run = Copy | Data


@dataclass(frozen=True)
class Recipe:
    """How the host builds the new image and its index: the runs in order."""

    release: str
    image_sha256: str
    index: Index
    runs: tuple[Run, ...]

    def text(self) -> str:
        """What the host's assembly command reads on stdin: one run a line."""
        return "".join(run.line() + "\n" for run in self.runs)

    @property
    def id(self) -> str:
        """Names the delta stream on the host, so an upload resumes only into its own recipe."""
        return hashlib.sha256(
            f"{self.release}\n{self.image_sha256}\n{self.text()}".encode()
        ).hexdigest()[:16]

    @property
    def delta_size(self) -> int:
        """Bytes of the delta stream: the new chunks' index records and their bytes."""
        return sum(len(r.records) + r.length for r in self.runs if isinstance(r, Data))

    @property
    def new_bytes(self) -> int:
        return sum(r.length for r in self.runs if isinstance(r, Data))

    @property
    def new_chunks(self) -> int:
        return sum(r.count for r in self.runs if isinstance(r, Data))

    @property
    def reused_bytes(self) -> int:
        return sum(r.length for r in self.runs if isinstance(r, Copy))

    def reused_from(self) -> dict[str, int]:
        """Release -> bytes copied from its image."""
        out: dict[str, int] = {}
        for r in self.runs:
            if isinstance(r, Copy):
                out[r.release] = out.get(r.release, 0) + r.length
        return out

    def sources(self) -> list[str]:
        return sorted(self.reused_from())

    def delta(self, image: Path, head: bytes = b"") -> DeltaStream:
        """The delta stream read from IMAGE, after HEAD (the upload puts the plan's text there)."""
        return DeltaStream(self, image, head)


def plan(release: str, image_sha256: str, new: Index, sources: Sequence[Source]) -> Recipe:
    """The runs that build NEW from SOURCES (in order of preference) plus new chunks.

    A chunk found in a source is copied from there, preferring the source and place that
    continue the current copy run (one ``dd`` for many chunks); a chunk found nowhere is new.
    Chunks are matched by hash prefix and length.
    """
    where: dict[tuple[bytes, int], tuple[int, int, int]] = {}
    tables: list[tuple[tuple[tuple[bytes, int], ...], list[int]]] = []
    for s_index, source in enumerate(sources):
        offsets = source.index.offsets()
        tables.append((source.index.records, offsets))
        for position, record in enumerate(source.index.records):
            where.setdefault(record, (s_index, position, offsets[position]))
    runs: list[Run] = []
    # The run being built: a copy (source, next position) or new data.
    copying: tuple[int, int] | None = None
    at = 0
    for record in new.records:
        length = record[1]
        last = runs[-1] if runs else None
        if copying is not None and isinstance(last, Copy):
            s_index, position = copying
            records, _ = tables[s_index]
            if position < len(records) and records[position] == record:
                runs[-1] = Copy(
                    last.release, last.offset, last.length + length, last.first, last.count + 1
                )
                copying = (s_index, position + 1)
                at += length
                continue
        found = where.get(record)
        if found is not None:
            s_index, position, offset = found
            runs.append(Copy(sources[s_index].release, offset, length, position, 1))
            copying = (s_index, position + 1)
        elif isinstance(last, Data):
            runs[-1] = Data(last.offset, last.length + length, last.records + RECORD.pack(*record))
            copying = None
        else:
            runs.append(Data(at, length, RECORD.pack(*record)))
            copying = None
        at += length
    return Recipe(release, image_sha256, new, tuple(runs))


class DeltaStream(io.RawIOBase):
    """The delta stream of a recipe, read from the new image: HEAD, then for each ``Data`` run,
    its index records, then its bytes. Seekable, so that an upload can resume where the host's
    copy ends."""

    def __init__(self, recipe: Recipe, image: Path, head: bytes = b"") -> None:
        super().__init__()
        self._image = image.open("rb")
        self._parts: list[tuple[int, bytes | tuple[int, int]]] = [(0, head)] if head else []
        at = len(head)
        for run in recipe.runs:
            if isinstance(run, Data):
                self._parts.append((at, run.records))
                at += len(run.records)
                self._parts.append((at, (run.offset, run.length)))
                at += run.length
        self.size = at
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        want = self.size - self._pos if size is None or size < 0 else size
        out = bytearray()
        for part in self._pieces(self._pos, want):
            out += part
        self._pos += len(out)
        return bytes(out)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _pieces(self, pos: int, want: int) -> Iterator[bytes]:
        for start, part in self._parts:
            if want <= 0:
                return
            length = len(part) if isinstance(part, bytes) else part[1]
            if pos >= start + length:
                continue
            skip = max(0, pos - start)
            take = min(length - skip, want)
            if isinstance(part, bytes):
                data = part[skip : skip + take]
            else:
                self._image.seek(part[0] + skip)
                data = self._image.read(take)
            yield data
            pos += len(data)
            want -= len(data)

    def close(self) -> None:
        self._image.close()
        super().close()

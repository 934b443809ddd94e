"""Delta uploads on the host: what it can copy from, and the assembly of a new image from kept
images plus the chunks sent. Nothing but ``sh``, ``dd``, ``cat``, ``sha256sum`` and other
coreutils: no chunker, no helper binary on the host."""

from __future__ import annotations

from ..chunks import RECORD
from ..command import Command, builder, sh_args
from .layout import PORTABLES_DIR

#: Exit status of ``assemble`` when the image it built is not the one planned (a damaged kept
#: image, a damaged stream): nothing was renamed into place.
MISMATCH = 5

_INVENTORY = (
    # $1: the release's image in place; $2: releases dir; $3: partial uploads dir; $4: portables.
    '[ -f "$1" ] && { h=$(sha256sum < "$1"); echo "image ${h%% *}"; }; '
    'for f in "$2"/*.index; do [ -f "$f" ] || continue; n=${f##*/}; n=${n%.index}; '
    '[ -f "$4/$n.raw" ] || continue; h=$(sha256sum < "$f"); echo "index $n ${h%% *}"; done; '
    'for f in "$3"/*.delta; do [ -f "$f" ] && echo "partial ${f##*/} $(wc -c < "$f")"; done; true'
)


@builder
def inventory(
    image: str, releases_dir: str, partial_dir: str, portables_dir: str = PORTABLES_DIR
) -> Command:
    """What a delta upload plans from, in one read: ``image SHA256`` when the release's image is
    in place already, ``index RELEASE SHA256`` for each kept release with an index (and its
    image), ``partial NAME BYTES`` for each delta stream an earlier upload left."""
    return sh_args(_INVENTORY, image, releases_dir, partial_dir, portables_dir)


_PREPARE = (
    # Keep only the stream of this recipe ($2) in the partial dir ($1): at most one left over.
    'mkdir -p "$1" "$3" "$4" || exit 1; '
    'for f in "$1"/*.delta; do [ -f "$f" ] && [ "${f##*/}" != "$2" ] && rm -f "$f"; done; true'
)


@builder
def prepare(partial_dir: str, stream: str, incoming_dir: str, releases_dir: str) -> Command:
    """Make the directories an upload writes to, and drop every other recipe's left-over stream."""
    return sh_args(_PREPARE, partial_dir, stream, incoming_dir, releases_dir, mutates=True)


#: Reads the recipe at the head of the stream, one run a line: ``c RELEASE OFFSET LENGTH FIRST
#: COUNT`` copies from a kept image and its index; ``d LENGTH COUNT`` takes COUNT index records,
#: then LENGTH bytes, from the stream. Everything goes to *.part files, renamed into staging only
#: when the index's sha256 is the one planned; the image's is checked against the signed
#: manifest by ``trust.check_release``, in the same command (one hash of the image, not two).
_ASSEMBLE = (
    'img="$1" idx="$2" delta="$3" pos="$4" rel="$6" por="$7"; '
    'rm -f "$img.part" "$idx.part"; : > "$img.part" && : > "$idx.part" || exit 1; '
    'copy() { dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=1M status=none '
    f'>> "$4" || exit {MISMATCH}; }}; '
    'head -c "$pos" "$delta" | while read -r kind a b c d e; do case "$kind" in '
    f'c) copy "$por/$a.raw" "$b" "$c" "$img.part"; copy "$rel/$a.index" $((d * {RECORD.size})) '
    f'$((e * {RECORD.size})) "$idx.part";; '
    f'd) copy "$delta" "$pos" $((b * {RECORD.size})) "$idx.part"; pos=$((pos + b * {RECORD.size})); '
    'copy "$delta" "$pos" "$a" "$img.part"; pos=$((pos + a));; '
    f'*) exit {MISMATCH};; esac; done || {{ rm -f "$img.part" "$idx.part"; exit {MISMATCH}; }}; '
    'h=$(sha256sum < "$idx.part"); h=${h%% *}; '
    f'if [ "$h" != "$5" ]; then rm -f "$img.part" "$idx.part"; echo "index $h"; exit {MISMATCH}; fi; '
    'mv -f "$img.part" "$img" && mv -f "$idx.part" "$idx" && rm -f "$delta"'
)


@builder
def assemble(
    image: str,
    index: str,
    stream: str,
    recipe_bytes: int,
    index_sha256: str,
    releases_dir: str,
    portables_dir: str = PORTABLES_DIR,
) -> Command:
    """Build IMAGE and INDEX (in staging) from the recipe and chunks in STREAM and the kept
    releases' images and indexes (exit ``MISMATCH`` if that fails or the index is not the
    planned one: nothing is renamed then). The stream is deleted once used. Whether the image
    is the signed one is ``trust.check_release``'s to say, run right after it."""
    return sh_args(
        _ASSEMBLE,
        image,
        index,
        stream,
        str(recipe_bytes),
        index_sha256,
        releases_dir,
        portables_dir,
        mutates=True,
    )


@builder
def forget(partial_dir: str) -> Command:
    """Delete every left-over delta stream (after a full disk: room first)."""
    return sh_args(
        'for f in "$1"/*.delta; do [ -f "$f" ] && rm -f "$f"; done; true', partial_dir, mutates=True
    )

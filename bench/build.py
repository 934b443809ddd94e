"""Benchmark: how much does `build()` cost on top of a bare mksquashfs of the same tree?

    python bench/build.py [--runs 5] [--size-mb 20] [--app-dir build]

(a) ``image.build(cfg, version, run_commands=False)``: assembly, mksquashfs, hashing, manifest.
(b) ``mksquashfs`` alone on the already-assembled tree, with the same flags.
Prints the medians and their ratio (target: <= 1.3) for zstd and gzip, and, when the reference
app's binaries exist, the size of the app + Litestream image next to the original setup's 18 MB.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from portable_deploy.config import (  # noqa: E402
    AppConfig,
    BuildConfig,
    Compression,
    Config,
    ImageConfig,
    SignConfig,
)
from portable_deploy.image import assemble_tree, build, mksquashfs_argv  # noqa: E402

ORIGINAL_SETUP_MB = 18.0
TARGET_RATIO = 1.3

UNIT = """\
[Service]
ExecStart=/usr/bin/bench
StateDirectory=bench bench-replica
"""


def make_project(root: Path, size_mb: int) -> Config:
    """A project whose image holds one big, incompressible, deterministic file and a few small ones."""
    (root / "units").mkdir(parents=True)
    (root / "units/bench.service").write_text(UNIT)
    (root / "units/bench-http.socket").write_text("[Socket]\nListenStream=80\n")
    (root / "image/etc").mkdir(parents=True)
    (root / "image/etc/bench.conf").write_text("answer = 42\n")
    (root / "build").mkdir()
    rng = random.Random(20240601)
    (root / "build/bench").write_bytes(rng.randbytes(size_mb * 1024 * 1024))
    (root / "build/bench").chmod(0o755)
    for i in range(20):
        (root / f"build/small-{i}.txt").write_text(f"small file {i}\n" * (i + 1))
    files = {"usr/bin/bench": root / "build/bench"}
    files |= {f"usr/share/bench/small-{i}.txt": root / f"build/small-{i}.txt" for i in range(20)}
    return config(root, "bench", root / "units", root / "image", files, root / "dist")


def config(
    root: Path,
    name: str,
    units: Path,
    tree: Path | None,
    files: Mapping[str, Path],
    dist: Path,
    compression: Compression = Compression.ZSTD,
) -> Config:
    return Config(
        path=root / "deploy.toml",
        app=AppConfig(name=name, version="0"),
        build=BuildConfig(),
        image=ImageConfig(tree=tree, units=units, files=files, compression=compression, dist=dist),
        sign=SignConfig(),
        hosts={},
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one call."""
    start, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - start, cpu_seconds() - cpu


@dataclass(frozen=True)
class Result:
    ours: list[float]
    bare: list[float]
    ours_cpu: list[float]
    bare_cpu: list[float]
    image_bytes: int

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.ours_cpu) / statistics.median(self.bare_cpu)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.bare)

    @property
    def ratio_of_minima(self) -> float:
        return min(self.ours) / min(self.bare)


def compare(cfg: Config, runs: int, workdir: Path) -> Result:
    """build() and bare mksquashfs of the same tree, interleaved ``runs`` times each."""
    tree = workdir / "tree"
    assemble_tree(cfg, tree)
    bare_out = workdir / "bare.raw"
    argv = mksquashfs_argv(tree, bare_out, cfg.image.compression, cfg.image.compression_level)

    def bare() -> None:
        bare_out.unlink(missing_ok=True)
        subprocess.run(argv, check=True, capture_output=True)

    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    artifact = build(cfg, "warmup", run_commands=False)  # warm the page cache for both
    bare()
    for i in range(runs):
        # Interleaved, so drift in machine load hits both sides alike.
        ours.append(timed(functools.partial(build, cfg, f"run{i}", run_commands=False)))
        theirs.append(timed(bare))
    if bare_out.read_bytes() != artifact.image.read_bytes():
        raise SystemExit("bare mksquashfs and build() made different images: flags differ?")
    return Result(
        ours=[w for w, _ in ours],
        bare=[w for w, _ in theirs],
        ours_cpu=[c for _, c in ours],
        bare_cpu=[c for _, c in theirs],
        image_bytes=artifact.image.stat().st_size,
    )


def app_image_sizes(app_dir: Path, workdir: Path) -> dict[str, int] | None:
    """Image size of the reference app (scoreboard + litestream + units) per compressor."""
    binaries = {
        "usr/bin/scoreboard": app_dir / "scoreboard",
        "usr/bin/litestream": app_dir / "litestream",
    }
    if not all(p.is_file() for p in binaries.values()):
        return None
    sizes: dict[str, int] = {}
    for comp in (Compression.ZSTD, Compression.GZIP):
        tree = REPO / "image"
        cfg = config(
            REPO,
            "scoreboard",
            REPO / "units",
            tree if tree.is_dir() else None,
            binaries,
            workdir / f"app-{comp}",
            comp,
        )
        sizes[str(comp)] = build(cfg, "bench", run_commands=False).image.stat().st_size
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=20)
    parser.add_argument("--app-dir", type=Path, default=REPO / "build")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        work = Path(tmp)
        base = make_project(work / "project", args.size_mb)
        print(
            f"tree: {args.size_mb} MiB random file + 20 small files + 2 units; {args.runs} runs each"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f} (other work skews timings)")
        print(
            f"{'compression':<12} {'build() median/min':>19} {'mksquashfs median/min':>22} "
            f"{'ratio':>6} {'(minima)':>8} {'(CPU)':>6} {'image':>8}"
        )
        results: dict[str, Result] = {}
        for comp in (Compression.ZSTD, Compression.GZIP):
            cfg = config(
                base.root,
                "bench",
                base.image.units,
                base.image.tree,
                base.image.files,
                work / f"dist-{comp}",
                comp,
            )
            r = results[str(comp)] = compare(cfg, args.runs, work / f"cmp-{comp}")
            verdict = "ok" if r.ratio <= TARGET_RATIO else f"over {TARGET_RATIO}"
            print(
                f"{comp!s:<12} {statistics.median(r.ours):>9.3f}s/{min(r.ours):.3f}s "
                f"{statistics.median(r.bare):>12.3f}s/{min(r.bare):.3f}s "
                f"{r.ratio:>6.2f} {r.ratio_of_minima:>8.2f} {r.cpu_ratio:>6.2f} "
                f"{r.image_bytes / 1e6:>5.1f} MB  {verdict}"
            )
        zstd, gzip = results["zstd"], results["gzip"]
        print(
            "zstd vs gzip: build() time x"
            f"{statistics.median(zstd.ours) / statistics.median(gzip.ours):.2f}, "
            f"image size x{zstd.image_bytes / gzip.image_bytes:.3f} (random data: incompressible)"
        )

        sizes = app_image_sizes(args.app_dir, work)
        if sizes is None:
            print(f"reference app: no scoreboard + litestream in {args.app_dir} (skipped)")
        else:
            for name, size in sizes.items():
                print(
                    f"reference app image ({name}): {size / 1e6:.1f} MB "
                    f"(original setup: {ORIGINAL_SETUP_MB:.0f} MB)"
                )


if __name__ == "__main__":
    main()

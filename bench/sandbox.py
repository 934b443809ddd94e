"""Sandbox timings: a cached `up` of 1 and of 3 VMs to SSH-ready, and the base image build.

    python bench/sandbox.py             # boots from the cached base (builds it first if missing)
    python bench/sandbox.py --rebuild   # also builds a fresh base into a temporary cache dir

The VMs run in a temporary state dir and are always stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from portable_deploy.errors import DeployError
from portable_deploy.sandbox import Sandbox

TARGETS = {1: 30.0, 3: 60.0}
SSH_UP = re.compile(r"^(sandbox-\d+): ssh up after ([\d.]+) s")


def log(line: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {line}", flush=True)


def timed_up(box: Sandbox, count: int) -> tuple[float, float]:
    """Boot COUNT VMs from nothing; (seconds until the last answered SSH, until up() returned)."""
    box.down()
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        log(line)

    started = time.monotonic()
    box.up(count, progress=progress)
    returned = time.monotonic() - started
    ssh = [float(m.group(2)) for line in lines if (m := SSH_UP.match(line))]
    box.down()
    return (max(ssh) if ssh else returned), returned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rebuild", action="store_true", help="build a fresh base image in a temp cache dir"
    )
    args = parser.parse_args()

    rows: list[tuple[str, float, str]] = []
    work = Path(tempfile.mkdtemp(prefix="pd-bench-sandbox-"))
    cache = work / "cache" if args.rebuild else None
    box = Sandbox(state_dir=work / "state", cache_dir=cache)
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        started = time.monotonic()
        base = box.ensure_base(progress=log)
        built_now = time.monotonic() - started > 30
        meta = json.loads((base.dir / "base.json").read_text())
        build = meta.get("build_seconds", {})
        origin = "now" if built_now else f"at {meta.get('built_at', '?')}"
        for step in ("debootstrap", "provision", "disk"):
            if step in build:
                rows.append((f"base: {step} (built {origin})", float(build[step]), ""))
        rows.append(("base: total", sum(float(v) for v in build.values()), ""))
        print(f"kernel {base.kernel_flavour}, accel {box.accel(base)}")

        for count in (1, 3):
            ssh_s, up_s = timed_up(box, count)
            target = TARGETS[count]
            verdict = "ok" if ssh_s < target else "SLOW"
            rows.append(
                (f"cached up of {count} VM(s): SSH answered", ssh_s, f"< {target:.0f} s {verdict}")
            )
            rows.append((f"cached up of {count} VM(s): up() returned", up_s, ""))
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        box.down()
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average after: {os.getloadavg()[0]:.2f}")
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measurement':<{width}}  {'seconds':>8}  target")
    for name, seconds, verdict in rows:
        print(f"{name:<{width}}  {seconds:8.1f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fleet deploy time: an app-only change to 1 and to 3 sandbox hosts (the upload phase and the
switch phase apart), next to a plain serial loop over the 3 hosts (`invoke deploy --host` one
after the other), in one run on the bench's own three VMs.

    python bench/fleet.py [--runs N]

Targets (issue "Fleets"): upload to 3 hosts <= 1.5x the time of one; the whole 3-host deploy
<= 2x one host's. The default batches ([1, "100%"]: a canary, then the other two side by side)
are what is measured.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import bench_project, median

from portable_deploy import fleet, pipeline, preflight, release, ui
from portable_deploy.board import Board
from portable_deploy.config import load_config
from portable_deploy.targets import open_hosts

HOSTS = "".join(f"\n[hosts.h{i}]\nsandbox = {i}\n" for i in (1, 2, 3))


def built(root: Path, version: str) -> tuple[release.Signed, float]:
    os.environ["DEPLOY_VERSION"] = version
    cfg = load_config(root / "deploy.toml")
    start = time.monotonic()
    signed = release.sign_release(cfg, release.build(cfg))
    return signed, time.monotonic() - start


def on_fleet(root: Path, version: str, names: list[str]) -> dict[str, float]:
    """One fleet deploy of VERSION to NAMES: build, upload, switch and total seconds."""
    signed, build = built(root, version)
    cfg = load_config(root / "deploy.toml")
    with open_hosts(cfg, names) as hosts:
        for h in hosts:
            preflight.set_up_if_new(h, cfg)
        start = time.monotonic()
        with Board([h.name for h in hosts]) as board:
            if len(hosts) == 1:
                steps = ui.Steps()
                s0 = time.monotonic()
                pipeline.deploy_to(hosts[0], cfg, signed, release.Options(), steps)
                upload = sum(t for name, t in steps.timings if name.startswith("upload"))
                board.phases = {"upload": upload, "switch": time.monotonic() - s0 - upload}
            else:
                fleet.deploy(hosts, cfg, signed, release.Options(), board)
        took = time.monotonic() - start
    return {"build": build, **board.phases, "deploy": took, "total": build + took}


def serial(root: Path, version: str, names: list[str]) -> float:
    """A plain loop: build once, then one host after the other, each uploaded and switched."""
    signed, build = built(root, version)
    cfg = load_config(root / "deploy.toml")
    start = time.monotonic()
    with open_hosts(cfg, names) as hosts:
        for h in hosts:
            pipeline.deploy_to(h, cfg, signed, release.Options(), ui.Steps())
    return build + time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="deploys of each kind (default 3)")
    args = parser.parse_args()
    with bench_project("pd-bench-fleet-", vms=3) as b:
        os.chdir(b.root)
        os.environ["PORTABLE_DEPLOY_SANDBOX_DIR"] = b.env["PORTABLE_DEPLOY_SANDBOX_DIR"]
        toml = b.root / "deploy.toml"
        toml.write_text(toml.read_text().replace("[hosts.sandbox]\nsandbox = true\n", HOSTS))
        three = ["h1", "h2", "h3"]
        on_fleet(b.root, "f0", three)  # first deploy everywhere: set up, whole image
        one: list[dict[str, float]] = []
        many: list[dict[str, float]] = []
        loop: list[float] = []
        for i in range(1, args.runs + 1):
            # The same app-only change each time: one host, then the fleet, then the loop.
            one.append(on_fleet(b.root, f"f{i}a", ["h1"]))
            many.append(on_fleet(b.root, f"f{i}b", three))
            loop.append(serial(b.root, f"f{i}c", three))

        def m(rows: list[dict[str, float]], key: str) -> float:
            return median([r[key] for r in rows])

        print()
        print(f"app-only deploy, seconds (median of {args.runs}); build {m(many, 'build'):.1f}s")
        print("                              upload   switch   whole (with build)")
        print(
            f"  1 host                    {m(one, 'upload'):7.1f}  {m(one, 'switch'):7.1f}  {m(one, 'total'):7.1f}"
        )
        print(
            f"  3 hosts, invoke deploy    {m(many, 'upload'):7.1f}  {m(many, 'switch'):7.1f}  {m(many, 'total'):7.1f}"
        )
        print(f"  3 hosts, serial loop                         {median(loop):7.1f}")
        up = m(many, "upload") / m(one, "upload")
        whole = m(many, "total") / m(one, "total")
        print(
            f"  upload 3 / upload 1       {up:7.2f}   (target <= 1.5: {'met' if up <= 1.5 else 'NOT met'})"
        )
        print(
            f"  whole 3 / whole 1         {whole:7.2f}   (target <= 2: {'met' if whole <= 2 else 'NOT met'})"
        )
        print(f"  serial loop / fleet       {median(loop) / m(many, 'total'):7.2f}")


if __name__ == "__main__":
    main()

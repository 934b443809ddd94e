"""Deploy time: `invoke deploy` of an app-only change and of an unchanged release, per step, the
SSH connections it opens, and a rollback's time; next to a hand-written baseline (scp the image,
then `ssh portablectl reattach --now`) run in the same script on the same sandbox VM.

    python bench/deploy.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from common import bench_project, median

from portable_deploy import pipeline, preflight, release, ui
from portable_deploy.config import load_config
from portable_deploy.targets import open_hosts


def deploy_in_process(root: Path, version: str) -> tuple[float, list[tuple[str, float]], int, int]:
    """One deploy through the pipeline; returns wall time, step timings, SSH connections and
    round trips (commands, transfers, HTTP requests)."""
    os.environ["DEPLOY_VERSION"] = version
    cfg = load_config(root / "deploy.toml")
    steps = ui.Steps()
    start = time.monotonic()
    with steps.step("build"):
        artifact = release.build(cfg)
    with steps.step("sign"):
        signed = release.sign_release(cfg, artifact)
    with open_hosts(cfg, None) as hosts:
        for host in hosts:
            preflight.set_up_if_new(host, cfg)  # the sandbox's first use, as the tasks do
            pipeline.deploy_to(host, cfg, signed, release.Options(), steps)
        connections = sum(h.connections_opened for h in hosts)
        trips = sum(h.round_trips for h in hosts)
    return time.monotonic() - start, steps.timings, connections, trips


def rollback_in_process(root: Path) -> tuple[float, int, int]:
    cfg = load_config(root / "deploy.toml")
    steps = ui.Steps()
    start = time.monotonic()
    with open_hosts(cfg, None) as hosts:
        for host in hosts:
            pipeline.rollback_on(host, cfg, None, release.Options(), steps)
        took = time.monotonic() - start
        return took, sum(h.connections_opened for h in hosts), sum(h.round_trips for h in hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--runs", type=int, default=5, help="app-only deploys and rollbacks to time (default 5)"
    )
    args = parser.parse_args()
    with bench_project("pd-bench-deploy-") as b:
        os.chdir(b.root)
        os.environ["PORTABLE_DEPLOY_SANDBOX_DIR"] = b.env["PORTABLE_DEPLOY_SANDBOX_DIR"]
        first, _, _, _ = deploy_in_process(b.root, "b0")
        app_change, unchanged, rollbacks, baseline = [], [], [], []
        step_totals: dict[str, list[float]] = {}
        conns: list[int] = []
        trips: dict[str, int] = {}
        for i in range(1, args.runs + 1):
            wall, timings, n, t = deploy_in_process(b.root, f"b{i}")
            app_change.append(wall)
            conns.append(n)
            trips["app-only deploy"] = t
            for name, took in timings:
                key = name.split(" ")[0]
                step_totals.setdefault(key, []).append(took)
            wall, _, n, t = deploy_in_process(b.root, f"b{i}")
            unchanged.append(wall)
            conns.append(n)
            trips["unchanged deploy"] = t
            wall, n, t = rollback_in_process(b.root)
            rollbacks.append(wall)
            conns.append(n)
            trips["rollback"] = t
            deploy_in_process(b.root, f"b{i}")  # back to the new release for the next round
        # Baseline: what a hand-written script does for the same kind of change.
        for i in range(1, args.runs + 1):
            version = f"h{i}"
            start = time.monotonic()
            b.invoke("build", version=version)
            image = b.root / f"dist/scoreboard_{version}.raw"
            port = str(b.vm.ssh_port)
            opts = ["-i", str(b.vm.key), "-o", f"UserKnownHostsFile={b.vm.known_hosts}"]
            subprocess.run(
                ["scp", "-q", "-P", port, *opts, str(image), "root@127.0.0.1:/var/lib/portables/"],
                check=True,
            )
            b.ssh(f"portablectl reattach --now --enable /var/lib/portables/{image.name}")
            baseline.append(time.monotonic() - start)
        print()
        print("deploy time on the sandbox VM (seconds, median of", args.runs, "runs)")
        print(f"  first deploy (attach)                 {first:7.1f}")
        print(f"  app-only change, invoke deploy        {median(app_change):7.1f}")
        for name, values in step_totals.items():
            print(f"      {name:<33} {median(values):7.1f}")
        print(f"  unchanged release, invoke deploy      {median(unchanged):7.1f}")
        roll = median(rollbacks)
        print(
            f"  rollback                              {roll:7.1f}   (target < 5: "
            f"{'met' if roll < 5 else 'NOT met'})"
        )
        print(
            f"  baseline: scp + reattach --now        {median(baseline):7.1f}   (build, scp, reattach --now: no checks, no verify)"
        )
        ratio = median(app_change) / median(baseline)
        print(
            f"  ratio deploy(app-only) / baseline     {ratio:7.2f}   (target <= 1.2: "
            f"{'met' if ratio <= 1.2 else 'NOT met'})"
        )
        print(f"  SSH connections per deploy/rollback   {max(conns)} (target 1)")
        for what, n in trips.items():
            print(f"  round trips, {what:<24} {n:4d}")


if __name__ == "__main__":
    main()

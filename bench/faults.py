"""Faults: every case of the fault suite (tests/faults) N times on a sandbox VM of its own, under
a writer of numbered rows and a reader of /version, next to the baselines it is judged against,
measured in the same run:

  bare restart          `systemctl restart scoreboard.service` under the same load
  restart, busy         the same with a request in flight that the app drains (the RESTARTING
                        cases hold one, to be sure to hit the restart)
  bare reboot           `echo b > /proc/sysrq-trigger` on the VM, until the app answers again

For each case: runs, the longest time the app did not answer a read, rows lost (acknowledged
writes missing afterwards), manual steps (a next plain deploy that did not succeed), time to heal
(from the fault until nothing is armed or in flight and the app answers), and problems found by
the suite's checks.

Targets: 0 rows lost, 0 manual steps; unavailability no longer than the matching restart
baseline, except where the deployer died after the switch (<= confirm timeout + one restart)
and the reboot (<= a bare reboot + one restart).

    python bench/faults.py [--runs 3] [--only TEXT[,TEXT...]]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import REPO

sys.path.insert(0, str(REPO))

from portable_deploy.sandbox import Sandbox, mux
from tests.faults.harness import (
    CASES,
    CONFIRM_TIMEOUT,
    REBOOT,
    RESTARTING,
    SIGKILL,
    SLOW_MS,
    Case,
    Load,
    Outcome,
    hard_reboot,
    no_fault_left,
    prepare,
    run_case,
    slow_request,
    ssh,
    wait_healed,
)
from tests.project import Project, make_project


def baseline(project: Project, runs: int, act: Callable[[], None]) -> list[float]:
    """The longest time without an answer while ACT runs, RUNS times."""
    gaps = []
    for i in range(runs):
        with Load(project.vm.http_port, f"baseline-{time.monotonic_ns()}-{i}") as load:
            time.sleep(1)
            act()
            wait_healed(project, ())
            time.sleep(1)
            gaps.append(load.stop().longest_gap)
    return gaps


def restart(project: Project) -> None:
    ssh(project, "systemctl restart scoreboard.service")


def busy_restart(project: Project) -> None:
    slow_request(project, SLOW_MS)
    time.sleep(0.5)
    restart(project)


def reboot(project: Project) -> None:
    hard_reboot(project)


def bound(case: Case, base: dict[str, float]) -> tuple[float, str]:
    """The longest unavailability CASE may show, and what it is measured against."""
    one = base["restart, busy"] if case.where == RESTARTING else base["bare restart"]
    if case.fault == REBOOT:
        return base["bare reboot"] + one, "bare reboot + restart"
    if case.fault == SIGKILL and case.after_switch:
        return CONFIRM_TIMEOUT + one, "confirm timeout + restart"
    return one, "restart, busy" if case.where == RESTARTING else "bare restart"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="run the cases whose name holds one of these")
    args = parser.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    cases = [c for c in CASES if not wanted or any(w in c.name for w in wanted)]

    with tempfile.TemporaryDirectory(prefix="pd-bench-faults-") as tmp:
        box = Sandbox(state_dir=Path(tmp) / "sandbox")
        try:
            (vm,) = box.up(1, progress=lambda line: print(f"  {line}", flush=True))
            mux.share(vm)  # the checks' ssh commands cost the guest no handshake each
            root = Path(tmp) / "app"
            root.mkdir()
            project = make_project(vm, root, pack_level=None)  # the reference app's images
            prepare(project)
            base = {
                name: max(baseline(project, args.runs, act))
                for name, act in (
                    ("bare restart", lambda: restart(project)),
                    ("restart, busy", lambda: busy_restart(project)),
                    ("bare reboot", lambda: reboot(project)),
                )
            }
            for name, worst in base.items():
                print(
                    f"baseline {name}: longest unavailability {worst:.1f} s (worst of {args.runs})"
                )
            results: dict[str, list[Outcome]] = {}
            n = 0
            for case in cases:
                for run in range(args.runs):
                    n += 1
                    with no_fault_left(project):
                        outcome = run_case(project, case, f"b{n:03d}")
                    results.setdefault(case.name, []).append(outcome)
                    print(
                        f"  {case.name} run {run + 1}: unavailable {outcome.load.longest_gap:.1f} s, "
                        f"lost {len(outcome.lost)} of {len(outcome.load.acked)}, healed in "
                        f"{outcome.heal_seconds:.1f} s, next deploy exit {outcome.next_deploy}"
                        + (f"; problems: {outcome.problems}" if outcome.problems else ""),
                        flush=True,
                    )
        finally:
            mux.stop_all()
            box.down()
    report(cases, results, base, args.runs)


def report(
    cases: list[Case], results: dict[str, list[Outcome]], base: dict[str, float], runs: int
) -> None:
    print()
    print(
        "| fault | runs | longest unavailable | target | rows lost (of acknowledged) | manual steps | time to heal (median / max) | problems |"
    )
    print("|---|---|---|---|---|---|---|---|")
    all_met = True
    for case in cases:
        outcomes = results[case.name]
        worst = max(o.load.longest_gap for o in outcomes)
        limit, against = bound(case, base)
        lost = sum(len(o.lost) for o in outcomes)
        acked = sum(len(o.load.acked) for o in outcomes)
        manual = sum(o.manual_steps for o in outcomes)
        heals = [o.heal_seconds for o in outcomes]
        problems = sum(len(o.problems) for o in outcomes)
        met = worst <= limit and lost == 0 and manual == 0 and problems == 0
        all_met &= met
        print(
            f"| {case.name} | {len(outcomes)} | {worst:.1f} s | <= {limit:.1f} s ({against}) | "
            f"{lost} ({acked:,}) | {manual} | {statistics.median(heals):.1f} / {max(heals):.1f} s | "
            f"{problems} |"
        )
    total_lost = sum(len(o.lost) for os_ in results.values() for o in os_)
    total_manual = sum(o.manual_steps for os_ in results.values() for o in os_)
    print()
    print(f"baselines (worst of {runs}): " + ", ".join(f"{k} {v:.1f} s" for k, v in base.items()))
    print(f"target: 0 rows lost -> {'met' if total_lost == 0 else 'NOT met'}")
    print(f"target: 0 manual steps -> {'met' if total_manual == 0 else 'NOT met'}")
    print(
        f"target: every case within its unavailability bound, no problem -> {'met' if all_met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

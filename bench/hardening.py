"""Hardening, measured: `systemd-analyze security` of the reference app's attached units on the
sandbox VM, under the stock `default` portable profile and under portable-deploy's
`pd-hardened` (the same release, reattached: `[deploy] profile` is the only change).

    python bench/hardening.py

Lower is better (0 = fully locked down, 10 = fully exposed). Targets: app <= 1.0, Litestream and
restore <= 2.0. Debian's own ssh.service is shown for scale.
"""

from __future__ import annotations

from common import Bench, bench_project

from portable_deploy import facts

TARGETS = {
    "scoreboard.service": 1.0,
    "scoreboard-litestream.service": 2.0,
    "scoreboard-restore.service": 2.0,
}


def scores(b: Bench) -> dict[str, float]:
    out: dict[str, float] = {}
    for unit in (*TARGETS, "ssh.service"):
        score = facts.exposure(b.ssh(f"systemd-analyze security --no-pager {unit} | tail -n1"))
        if score is None:
            raise SystemExit(f"no exposure score for {unit}")
        out[unit] = score
    return out


def main() -> None:
    with bench_project("pd-bench-hardening-") as b:
        toml = b.root / "deploy.toml"
        hardened = toml.read_text()
        toml.write_text(hardened.replace("[deploy]\n", '[deploy]\nprofile = "default"\n'))
        b.invoke("deploy", version="h1")
        stock = scores(b)
        toml.write_text(hardened)
        b.invoke("deploy", "--no-build", version="h1")
        ours = scores(b)
    print()
    print(f"{'unit':32} {'default':>8} {'pd-hardened':>12} {'target':>7}")
    for unit in (*TARGETS, "ssh.service"):
        target = TARGETS.get(unit)
        mark = "" if target is None else ("  met" if ours[unit] <= target else "  NOT met")
        print(
            f"{unit:32} {stock[unit]:8.1f} {ours[unit]:12.1f} "
            f"{'' if target is None else f'<= {target:.1f}':>7}{mark}"
        )


if __name__ == "__main__":
    main()

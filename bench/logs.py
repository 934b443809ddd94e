"""Log throughput: lines per second that `invoke logs --json` and the rendered view give from a
host with 100,000 journal lines of the app, next to plain `ssh HOST journalctl -o cat` (and
`ssh HOST journalctl -o json`, what --json asks the host for), in the same run on the bench's
own sandbox VM. The runs of each round are interleaved, so a busy machine slows them alike.

    python bench/logs.py [--rounds 3] [--lines 100000] [--out bench/results/logs-latest.txt]

Every figure is the whole command, from start to its last line (Python's start and the SSH
handshake included, as in the ssh baseline), with stdout read by this script through a pipe;
the rendered view is measured on a pipe (plain text) and on a pseudo-terminal (priority
colours). `ssh HOST journalctl -o short-iso-precise` is what one host's view asks the host for
(journalctl's text, coloured by journalctl itself on a terminal).
Target (issue 14): within 1.5x of the `journalctl -o cat` baseline's time, on the same kind of
output (the terminal view against `ssh HOST journalctl -o cat` on a terminal: a terminal's
cost is every program's).
"""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import REPO, Bench, bench_project, median

from portable_deploy import journal
from portable_deploy.commands import journalctl
from portable_deploy.tasks.logs import TEXT

#: journald keeps at most 10,000 lines per unit in 30 s (times a factor for free disk space:
#: 30,000 were kept of 100,000 on the sandbox), so the lines come from units of 25,000 each.
UNITS = 4
#: Each unit prints its share of numbered request lines; every 10th is a warning, every 50th
#: an error (the `<N>` prefix journald reads as the priority), for the colours.
GENERATE = (
    "systemd-run --quiet --wait --unit=scoreboard-logbench-{n} sh -c "
    '\'seq $1 $2 | awk "{{ p = (\\$1 % 50 == 0) ? \\"<3>\\" : ((\\$1 % 10 == 0) ? \\"<4>\\" : '
    '\\"\\"); print p \\"request \\" \\$1 \\": GET /api/scores 200 1.2ms\\" }}"\' sh {first} {last}'
)
COUNT = "journalctl --no-pager -o cat -u 'scoreboard-logbench-*' | grep -c '^request ' || true"


def run(
    argv: list[str], env: dict[str, str], cwd: Path, terminal: bool = False
) -> tuple[float, int]:
    """Run ARGV, read its stdout to the end (a pipe, or a pseudo-terminal); (seconds, lines)."""
    start = time.monotonic()
    lines = 0
    if terminal:
        main, sub = pty.openpty()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sub)
        os.close(sub)
        while True:
            try:
                chunk = os.read(main, 1 << 20)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            lines += chunk.count(b"\n")
        os.close(main)
    else:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(1 << 20):
            lines += chunk.count(b"\n")
    if proc.wait() != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}")
    return time.monotonic() - start, lines


def generate(b: Bench, total: int) -> None:
    """TOTAL request lines in the app's journal (scoreboard-logbench-N units), all stored."""
    share = total // UNITS
    for n in range(1, UNITS + 1):
        first = (n - 1) * share + 1
        b.ssh(GENERATE.format(n=n, first=first, last=first + share - 1))
    deadline = time.monotonic() + 600
    while (stored := int(b.ssh(COUNT).strip() or 0)) < share * UNITS:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {stored} of {share * UNITS} lines reached the journal")
        time.sleep(5)  # journald is still writing what the units printed
    print(f"  {stored} request lines in the journal", flush=True)


def local_render(b: Bench, lines: int) -> float:
    """Lines per second this machine parses and renders (no host, no SSH): the several hosts'
    view's own cost (one host's view prints journalctl's text as it comes)."""
    command = journalctl.logs(
        "scoreboard", output="json", fields=journalctl.VIEW_FIELDS, lines=lines
    ).render()
    text = b.ssh(command)
    start = time.monotonic()
    entries = journal.entries("sandbox", text)
    rendered = [e.render(tagged=False, colour=True) for e in journal.in_order(entries)]
    took = time.monotonic() - start
    assert len(rendered) >= lines * 0.99, len(rendered)
    return len(rendered) / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run (default 3)")
    parser.add_argument("--lines", type=int, default=100_000, help="journal lines (100,000)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/logs-latest.txt")
    args = parser.parse_args()
    n = str(args.lines)
    with bench_project("pd-bench-logs-") as b:
        b.invoke("logs", "-n", "1")  # the first use sets the sandbox host up
        generate(b, args.lines)
        invoke = [sys.executable, "-m", "invoke", "logs", "-n", n]
        journal_cmd = f"journalctl --no-pager -u 'scoreboard*' -n {n}"
        view = f"SYSTEMD_COLORS=0 {journal_cmd} -o {TEXT}"  # what one host's view asks for
        runs: dict[str, Callable[[], tuple[float, int]]] = {
            "ssh HOST journalctl -o cat (baseline)": lambda: run(
                b.vm.ssh_argv([f"{journal_cmd} -o cat"], batch=True), b.env, b.root
            ),
            "ssh HOST journalctl -o cat (terminal)": lambda: run(
                b.vm.ssh_argv([f"{journal_cmd} -o cat"], batch=True), b.env, b.root, terminal=True
            ),
            "ssh HOST journalctl -o json": lambda: run(
                b.vm.ssh_argv([f"{journal_cmd} -o json"], batch=True), b.env, b.root
            ),
            f"ssh HOST journalctl -o {TEXT}": lambda: run(
                b.vm.ssh_argv([view], batch=True), b.env, b.root
            ),
            "invoke logs --json": lambda: run([*invoke, "--json"], b.env, b.root),
            "invoke logs (view, pipe)": lambda: run(invoke, b.env, b.root),
            "invoke logs (view, terminal: colours)": lambda: run(
                invoke, b.env, b.root, terminal=True
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        counts: dict[str, int] = {}
        for r in range(1, args.rounds + 1):
            for name, measure in runs.items():
                took, lines = measure()
                times[name].append(took)
                counts[name] = lines
                print(f"  round {r}: {name}: {lines} lines in {took:.1f} s", flush=True)
        local = local_render(b, args.lines)
        system = b.ssh("systemctl --version | head -n1").strip()

    base = median(times["ssh HOST journalctl -o cat (baseline)"])
    report = [
        f"invoke logs throughput: {args.lines:,} journal lines of the app on the sandbox VM "
        f"({system}, TCG), median of {args.rounds} interleaved rounds",
        "",
        f"{'run':44} {'lines':>8} {'seconds':>8} {'lines/s':>8} {'x baseline':>10}",
    ]
    for name, values in times.items():
        t = median(values)
        report.append(
            f"{name:44} {counts[name]:>8} {t:>8.1f} {counts[name] / t:>8.0f} {t / base:>10.2f}"
        )
    report += [
        "",
        f"several hosts' view, parse and render alone, on this machine: {local:,.0f} lines/s",
        "the tool against its own remote command: "
        f"--json {median(times['invoke logs --json']) / median(times['ssh HOST journalctl -o json']):.2f}x "
        "ssh journalctl -o json; view "
        f"{median(times['invoke logs (view, pipe)']) / median(times[f'ssh HOST journalctl -o {TEXT}']):.2f}x "
        f"ssh journalctl -o {TEXT}",
        "",
    ]
    # Each run against the baseline on the same kind of output: a terminal costs every program
    # that writes to it (the kernel's line discipline, small reads), so the terminal view is
    # judged against journalctl -o cat on a terminal too (its ratio to the pipe is shown).
    terminal = median(times["ssh HOST journalctl -o cat (terminal)"])
    for name, against, label in (
        ("invoke logs --json", base, "journalctl -o cat"),
        ("invoke logs (view, pipe)", base, "journalctl -o cat"),
        ("invoke logs (view, terminal: colours)", terminal, "journalctl -o cat on a terminal"),
    ):
        ratio = median(times[name]) / against
        verdict = "met" if ratio <= 1.5 else "NOT met"
        piped = f" ({median(times[name]) / base:.2f}x the piped one)" if against != base else ""
        report.append(f"target: {name} within 1.5x of {label}: {ratio:.2f}x{piped} -> {verdict}")
    text = "\n".join(report) + "\n"
    print()
    print(text, end="")
    args.out.write_text(text)
    print(f"(written to {args.out})")


if __name__ == "__main__":
    main()

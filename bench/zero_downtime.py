"""Zero downtime: 4 clients hit scoreboard through the forwarded port while it is deployed N times
with app-only changes. Three ways, side by side, on the same sandbox VM:

  invoke deploy           reattach without --now, restart only the app; sockets held by systemd
  naive reattach --now    what `portablectl reattach --now` does: restarts socket and sidecars too
  app binds its own port  no socket activation: the app binds :80 itself (restart = refused conns)

    python bench/zero_downtime.py [--deploys 10] [--clients 4]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import threading
import time
from dataclasses import dataclass, field

from common import Bench, bench_project

MAX_SECONDS_PER_SCENARIO = 3600
MAX_REQUESTS = 2_000_000


@dataclass
class Load:
    """Bounded load: N client threads, each a loop of fresh-connection GETs, until stopped."""

    port: int
    clients: int
    ok: int = 0
    failed: int = 0
    worst: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS_PER_SCENARIO
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.ok + self.failed >= MAX_REQUESTS:
                return
            start = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                conn.close()
                good, why = response.status == 200, f"HTTP {response.status}"
            except OSError as e:
                good, why = False, type(e).__name__
            took = time.monotonic() - start
            with self._lock:
                self.worst = max(self.worst, took)
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors[why] = self.errors.get(why, 0) + 1

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)
        ]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def run(name: str, b: Bench, clients: int, deploy_once: list) -> tuple[str, Load]:  # type: ignore[type-arg]
    print(f"scenario: {name}", flush=True)
    with Load(b.vm.http_port, clients) as load:
        for i, step in enumerate(deploy_once):
            step()
            print(
                f"  deploy {i + 1}/{len(deploy_once)}: {load.ok} ok, {load.failed} failed",
                flush=True,
            )
    return name, load


def selfbind_units(b: Bench) -> None:
    """Switch the project to units without socket activation: the app binds :80 itself."""
    selfbind = b.root / "units-selfbind"
    shutil.copytree(b.root / "units", selfbind)
    (selfbind / "scoreboard-http.socket").unlink()
    service = (selfbind / "scoreboard.service").read_text()
    service = (
        service.replace("Requires=scoreboard-http.socket\n", "")
        .replace("After=scoreboard-http.socket\n", "")
        .replace("Sockets=scoreboard-http.socket\n", "Environment=SCOREBOARD_LISTEN=0.0.0.0:80\n")
    )
    (selfbind / "scoreboard.service").write_text(service)
    toml = b.root / "deploy.toml"
    toml.write_text(toml.read_text().replace('units = "units"', 'units = "units-selfbind"'))
    # Under the default profile (PrivateUsers=yes) the app may bind :80 only if the host
    # lets unprivileged users do so; this is for the baseline only.
    b.ssh("sysctl -q -w net.ipv4.ip_unprivileged_port_start=80")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--scenarios",
        default="tool,naive,selfbind",
        help="comma-separated subset of tool,naive,selfbind, run in that order (default: all)",
    )
    args = parser.parse_args()
    chosen = args.scenarios.split(",")
    versions = range(1, args.deploys + 1)
    results = []
    with bench_project("pd-bench-zd-") as b:
        b.invoke("deploy", version="z0")

        def tool_deploy(v: str):  # type: ignore[no-untyped-def]
            return lambda: b.invoke("deploy", version=v)

        def naive(v: str):  # type: ignore[no-untyped-def]
            def step() -> None:
                b.invoke("build", version=v)
                b.invoke("sign", version=v)
                b.invoke("upload", version=v)
                b.ssh(f"portablectl reattach --now --enable /var/lib/portables/scoreboard_{v}.raw")

            return step

        if "tool" in chosen:
            results.append(
                run("invoke deploy", b, args.clients, [tool_deploy(f"z{i}") for i in versions])
            )
        if "naive" in chosen:
            results.append(
                run("naive reattach --now", b, args.clients, [naive(f"n{i}") for i in versions])
            )
        if "selfbind" in chosen:
            selfbind_units(b)
            b.invoke("deploy", version="s0")
            results.append(
                run(
                    "app binds its own port",
                    b,
                    args.clients,
                    [tool_deploy(f"s{i}") for i in versions],
                )
            )

    print()
    print(
        f"{args.deploys} app-only deploys each, {args.clients} clients, fresh connection per request"
    )
    print(f"{'':26} {'requests':>9} {'failed':>7} {'worst latency':>14}")
    for name, load in results:
        print(
            f"{name:26} {load.ok + load.failed:9d} {load.failed:7d} {load.worst:13.1f}s  {load.errors or ''}"
        )
        if name == "invoke deploy":
            print(f"{'':26} target: 0 failed -> {'met' if load.failed == 0 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Zero downtime: clients hit scoreboard through the forwarded ports while it is deployed N times
with app-only changes, in one run on the same sandbox VM:

  steady                  no deploy: the latencies to compare with (as long as one scenario)
  bare restart            `systemctl restart scoreboard.service`, N times (stop, then start)
  invoke deploy, plain    [deploy] overlap = false: reattach without --now, restart the app only
  invoke deploy, overlap  the reference app's default: the new release starts beside the old one
                          on the same sockets (its twin), ready before it takes a connection
  broken release          overlapped deploys of a release whose health check fails: counts the
                          requests it answered (/version on HTTPS)
  naive reattach --now    what `portablectl reattach --now` does: restarts socket and sidecars too
  app binds its own port  no socket activation: the app binds :80 itself (restart = refused conns)

The app runs with TLS on: pebble (Let's Encrypt's test CA) in the VM issues its certificate
over ACME before the first scenario. HTTP clients get the app's redirect (308) on port 80; HTTPS
clients make a fresh TCP connection and a full TLS handshake (SNI scoreboard.test, checked
against pebble's root) for every request on 443. The last scenario has no sockets, so it has
no TLS either (HTTP on :80 only).

Each scenario's releases are built and signed before its clients start, and deployed with
`--no-build` while they run: the build is the deploying machine's work (a laptop's), and on
this one machine it would take both cores from the VM that serves the clients, so its stall
would be measured as the switch's.

    python bench/zero_downtime.py [--deploys 10] [--clients 4]
        [--scenarios steady,bare,plain,overlap,broken,naive,selfbind]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass, field

from common import Bench, bench_project

from portable_deploy.sandbox import acme

MAX_SECONDS_PER_SCENARIO = 3600
MAX_REQUESTS = 2_000_000
DOMAIN = "scoreboard.test"


@dataclass
class Load:
    """Bounded load: N client threads, each a loop of fresh-connection GETs, until stopped.

    With ``tls`` set, every request is a new TCP connection and a full TLS handshake."""

    port: int
    clients: int
    tls: ssl.SSLContext | None = None
    #: Answers that count as served (the app redirects plain HTTP when TLS is on).
    good: frozenset[int] = frozenset({200})
    path: str = "/healthz"
    #: Served answers by body (first line), when the path's body says something (/version).
    bodies: dict[str, int] = field(default_factory=dict)
    ok: int = 0
    failed: int = 0
    worst: float = 0.0
    latencies: list[float] = field(default_factory=list)
    handshakes: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _once(self) -> tuple[int, float | None, bytes]:
        if self.tls is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request("GET", self.path, headers={"Host": DOMAIN})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            return response.status, None, body
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        start = time.monotonic()
        with self.tls.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            handshake = time.monotonic() - start
            conn = http.client.HTTPConnection(DOMAIN)
            conn.sock = tls
            conn.request("GET", self.path, headers={"Host": DOMAIN, "Connection": "close"})
            response = conn.getresponse()
            return response.status, handshake, response.read()

    def _client(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS_PER_SCENARIO
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.ok + self.failed >= MAX_REQUESTS:
                return
            start = time.monotonic()
            handshake, body = None, b""
            try:
                status, handshake, body = self._once()
                good, why = status in self.good, f"HTTP {status}"
            except (OSError, http.client.HTTPException) as e:
                good, why = False, type(e).__name__
            took = time.monotonic() - start
            with self._lock:
                self.worst = max(self.worst, took)
                if good:
                    self.ok += 1
                    self.latencies.append(took)
                    if self.path != "/healthz":
                        said = body.decode(errors="replace").strip().split("\n")[0]
                        self.bodies[said] = self.bodies.get(said, 0) + 1
                    if handshake is not None:
                        self.handshakes.append(handshake)
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


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def run(name: str, loads: dict[str, Load], deploy_once: list) -> list[tuple[str, Load]]:  # type: ignore[type-arg]
    print(f"scenario: {name}", flush=True)
    for load in loads.values():
        load.__enter__()
    try:
        for i, step in enumerate(deploy_once):
            step()
            counts = ", ".join(f"{k}: {v.ok} ok, {v.failed} failed" for k, v in loads.items())
            print(f"  deploy {i + 1}/{len(deploy_once)}: {counts}", flush=True)
    finally:
        for load in loads.values():
            load.__exit__()
    return [(f"{name} ({kind})", load) for kind, load in loads.items()]


def tls_on(b: Bench) -> ssl.SSLContext:
    """pebble up in the VM, the app's TLS settings on the host, [verify.tls] in deploy.toml;
    returns a client context that trusts pebble's current root only."""
    root = b.root / ".deploy" / "pebble-root.pem"
    root.write_text(acme.start(b.vm, [DOMAIN]))
    b.ssh(
        f"printf 'SCOREBOARD_DOMAINS={DOMAIN}\\nSCOREBOARD_ACME_DIRECTORY={acme.DIRECTORY_URL}\\n'"
        " > /etc/default/scoreboard"
    )
    toml = b.root / "deploy.toml"
    toml.write_text(toml.read_text() + f'\n[verify.tls]\nname = "{DOMAIN}"\nca_file = "{root}"\n')
    return ssl.create_default_context(cafile=str(root))


def selfbind_units(b: Bench) -> None:
    """Switch the project to units without socket activation (and TLS off): the app binds :80."""
    selfbind = b.root / "units-selfbind"
    shutil.copytree(b.root / "units", selfbind)
    for name in ("scoreboard-http.socket", "scoreboard-https.socket"):
        (selfbind / name).unlink()
    sockets = "scoreboard-http.socket scoreboard-https.socket"
    service = (selfbind / "scoreboard.service").read_text()
    service = (
        service.replace(f"Requires={sockets}\n", "")
        .replace(f"After={sockets}\n", "")
        .replace(f"Sockets={sockets}\n", "Environment=SCOREBOARD_LISTEN=0.0.0.0:80\n")
    )
    assert "Sockets=" not in service and "SCOREBOARD_LISTEN" in service
    (selfbind / "scoreboard.service").write_text(service)
    toml = b.root / "deploy.toml"
    text = toml.read_text().replace('units = "units"', 'units = "units-selfbind"')
    toml.write_text(text.split("\n[verify.tls]")[0])
    # Under a portable profile (PrivateUsers=yes) the app may bind :80 only if the host lets
    # unprivileged users do so; this is for the baseline only.
    b.ssh("rm -f /etc/default/scoreboard; sysctl -q -w net.ipv4.ip_unprivileged_port_start=80")


ALL = ("steady", "bare", "plain", "overlap", "broken", "naive", "selfbind")


def set_overlap(b: Bench, on: bool) -> None:
    toml = b.root / "deploy.toml"
    text = toml.read_text()
    toml.write_text(
        text.replace(f"overlap = {str(not on).lower()}", f"overlap = {str(on).lower()}")
    )
    assert f"overlap = {str(on).lower()}" in toml.read_text()


def worst(results: list[tuple[str, Load]], prefix: str) -> float:
    return max((load.worst for name, load in results if name.startswith(prefix)), default=0.0)


def p99(results: list[tuple[str, Load]], name: str) -> float:
    return next((percentile(load.latencies, 99) for n, load in results if n == name), float("nan"))


def report_targets(results: list[tuple[str, Load]], broken: dict[str, int], bad: str) -> None:
    """Each of the issue's targets, met or NOT met."""

    def say(what: str, met: bool, detail: str) -> None:
        print(f"target: {what}: {detail} -> {'met' if met else 'NOT met'}")

    overlapped = [load for name, load in results if name.startswith("invoke deploy, overlap")]
    plain = [load for name, load in results if name.startswith("invoke deploy, plain")]
    for label, loads in (("overlapped", overlapped), ("plain", plain)):
        if loads:
            failed = sum(load.failed for load in loads)
            say(f"0 failed with the {label} invoke deploy", failed == 0, f"{failed} failed")
    bare = worst(results, "bare restart")
    if overlapped and bare:
        mine = worst(results, "invoke deploy, overlap")
        say(
            "worst latency of the overlapped deploy <= 0.5x the bare restart's",
            mine <= 0.5 * bare,
            f"{mine:.2f} s vs {bare:.2f} s ({mine / bare:.2f}x)",
        )
    for port in ("http", "https"):
        steady, mine = (
            p99(results, f"steady ({port})"),
            p99(results, f"invoke deploy, overlap ({port})"),
        )
        if steady == steady and mine == mine:  # both measured (not NaN)
            say(
                f"p99 of the overlapped deploy within 1.5x of steady state ({port})",
                mine <= 1.5 * steady,
                f"{mine * 1000:.0f} ms vs {steady * 1000:.0f} ms ({mine / steady:.2f}x)",
            )
    if bad:
        answered = sum(n for version, n in broken.items() if version.startswith(bad))
        say(
            "a release that fails health receives 0 requests",
            answered == 0,
            f"{answered} answered by it; answers by version: {broken}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4, help="clients per port (default 4)")
    parser.add_argument(
        "--broken", type=int, default=3, help="deploys of a release that fails health (default 3)"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL),
        help=f"comma-separated subset of {','.join(ALL)}, run in that order (default: all)",
    )
    args = parser.parse_args()
    chosen = args.scenarios.split(",")
    versions = range(1, args.deploys + 1)
    results: list[tuple[str, Load]] = []
    broken_answers: dict[str, int] = {}
    bad = ""
    with bench_project("pd-bench-zd-") as b:
        context = tls_on(b)
        b.invoke("deploy", version="z0")  # verify's HTTPS check waits for the first certificate

        def both() -> dict[str, Load]:
            return {
                "http": Load(b.vm.http_port, args.clients, good=frozenset({308})),
                "https": Load(b.vm.https_port, args.clients, tls=context),
            }

        def built(prefix: str, n: int, **env: str) -> list[str]:
            """Build and sign N releases before a scenario's clients start: the build is the
            deploying machine's work (a laptop's, not the server's), and here it would take
            both host cores from the VM that serves the clients."""
            names = [f"{prefix}{i}" for i in range(1, n + 1)]
            for v in names:
                b.invoke("build", version=v, **env)
                b.invoke("sign", version=v)
            return names

        def tool_deploy(v: str, check: bool = True):  # type: ignore[no-untyped-def]
            return lambda: b.invoke("deploy", "--no-build", version=v, check=check)

        def bare() -> None:
            b.ssh("systemctl restart scoreboard.service")
            time.sleep(2)  # each restart's stall on its own, as between deploys

        def naive(v: str):  # type: ignore[no-untyped-def]
            def step() -> None:
                b.invoke("upload", version=v)
                b.ssh(
                    "portablectl reattach --now --enable --profile pd-hardened --copy=copy "
                    f"/var/lib/portables/scoreboard_{v}.raw"
                )

            return step

        if "steady" in chosen:
            seconds = 3.0 * args.deploys
            results += run(f"steady ({seconds:.0f} s)", both(), [lambda: time.sleep(seconds)])
            results = [(n.replace(f" ({seconds:.0f} s)", ""), load) for n, load in results]
        if "bare" in chosen:
            results += run("bare restart", both(), [bare for _ in versions])
        if "plain" in chosen:
            set_overlap(b, False)
            plain = built("p", args.deploys)
            results += run("invoke deploy, plain", both(), [tool_deploy(v) for v in plain])
            set_overlap(b, True)
        if "overlap" in chosen:
            overlap = built("z", args.deploys)
            results += run("invoke deploy, overlap", both(), [tool_deploy(v) for v in overlap])
        if "broken" in chosen:
            bad = "bad"
            loads = both()
            loads["https"].path = "/version"

            broken = built("bad", args.broken, SCOREBOARD_BROKEN="1")
            results += run(
                "broken release, overlap",
                loads,
                [tool_deploy(v, check=False) for v in broken],
            )
            broken_answers = dict(loads["https"].bodies)
        if "naive" in chosen:
            results += run(
                "naive reattach --now", both(), [naive(v) for v in built("n", args.deploys)]
            )
        if "selfbind" in chosen:
            selfbind_units(b)
            b.invoke("deploy", "--restart-sockets", version="s0")
            results += run(
                "app binds :80",
                {"http": Load(b.vm.http_port, args.clients)},
                [tool_deploy(v) for v in built("s", args.deploys)],
            )

    print()
    print(
        f"{args.deploys} app-only deploys (or restarts) each, {args.clients} clients per port, "
        "fresh connection (and TLS handshake) per request"
    )
    print(
        f"{'':36} {'requests':>9} {'failed':>7} {'worst':>7} {'p50':>7} {'p99':>7}"
        f" {'handshake p50':>14} {'p99':>7}"
    )
    for name, load in results:
        hs = (
            f" {percentile(load.handshakes, 50) * 1000:12.1f}ms {percentile(load.handshakes, 99) * 1000:5.0f}ms"
            if load.handshakes
            else ""
        )
        print(
            f"{name:36} {load.ok + load.failed:9d} {load.failed:7d} {load.worst:6.2f}s"
            f" {percentile(load.latencies, 50) * 1000:5.1f}ms {percentile(load.latencies, 99) * 1000:5.0f}ms"
            f"{hs}  {load.errors or ''}"
        )
    report_targets(results, broken_answers, bad)


if __name__ == "__main__":
    main()

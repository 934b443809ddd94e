"""Delta uploads: bytes on the wire (both directions, listing, plan and index included) and wall
time of `invoke upload` for a first deploy, an app-only change, a Litestream-only change and no
change; next to the same upload sending the whole image ([upload] delta = false) and to rsync
of the image against the previous release; at full speed and through a link throttled to
10 Mbit/s. One run, one sandbox VM.

Every byte between this machine and the VM's sshd goes through a relay on 127.0.0.1 that counts
it (and, throttled, lets at most RATE through each way), so the tool and rsync are measured
the same way, SSH handshakes included.

    python bench/upload.py [--rate-mbit 10]

Needs rsync here (apt-get install rsync); the sandbox base image has it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

from common import bench_project

from portable_deploy import pipeline, preflight, release, ui
from portable_deploy.chunks import RECORD, Index
from portable_deploy.commands.layout import Layout
from portable_deploy.config import UploadConfig, load_config
from portable_deploy.host import Host, Target

REMOTE_RSYNC = "/var/tmp/pd-bench-rsync.raw"


class Relay:
    """127.0.0.1:port -> 127.0.0.1:target, counting bytes each way; at most RATE bytes/s each
    way when RATE is set (a token bucket per direction, shared by all connections)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.rate: float | None = None
        self.up = self.down = 0
        self._lock = threading.Lock()
        self._buckets = {"up": [0.0, time.monotonic()], "down": [0.0, time.monotonic()]}
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def reset(self, rate_mbit: float | None) -> None:
        with self._lock:
            self.up = self.down = 0
            self.rate = rate_mbit * 1e6 / 8 if rate_mbit else None
            for bucket in self._buckets.values():
                bucket[0], bucket[1] = 0.0, time.monotonic()

    def _serve(self) -> None:
        while True:
            client, _ = self._server.accept()
            server = socket.create_connection(("127.0.0.1", self.target))
            for a, b, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(a, b, way), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(16384):
                self._pace(way, len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _pace(self, way: str, n: int) -> None:
        with self._lock:
            if way == "up":
                self.up += n
            else:
                self.down += n
            if self.rate is None:
                return
            bucket = self._buckets[way]
            now = time.monotonic()
            # Bytes allowed so far minus bytes sent: wait for the debt to be paid.
            bucket[0] = max(bucket[0] - (now - bucket[1]) * self.rate, 0.0) + n
            bucket[1] = now
            wait = max(bucket[0] - 64 * 1024, 0) / self.rate
        if wait > 0:
            time.sleep(wait)


@dataclasses.dataclass
class Measure:
    up: int
    down: int
    seconds: float
    #: For the tool: the upload step alone (no connection, lock, state read or audit record).
    step: float = 0.0

    @property
    def total(self) -> int:
        return self.up + self.down


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate-mbit", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("error: rsync is not installed here (hint: apt-get install rsync)")
    with bench_project("pd-bench-upload-") as b:
        os.chdir(b.root)
        os.environ["PORTABLE_DEPLOY_SANDBOX_DIR"] = b.env["PORTABLE_DEPLOY_SANDBOX_DIR"]
        bins = b.root / "bench-bin"
        bins.mkdir()
        # Real builds of the app for two versions (the version string differs); Litestream
        # once, then changed in one string of the same length.
        for version in ("u1", "u2"):
            os.environ["DEPLOY_VERSION"] = version
            release.build(load_config(b.root / "deploy.toml"))
            shutil.copy(b.root / "build" / "scoreboard", bins / f"scoreboard-{version}")
        shutil.copy(b.root / "build" / "litestream", bins / "litestream-1")
        data = (bins / "litestream-1").read_bytes()
        at = data.index(b"litestream")
        (bins / "litestream-2").write_bytes(data[:at] + b"LITESTREAM" + data[at + 10 :])
        toml = b.root / "deploy.toml"
        text = toml.read_text().replace('commands = ["sh app/build.sh"]', "commands = []")
        text = text.replace('"build/scoreboard"', '"bench-bin/scoreboard"')
        text = text.replace('"build/litestream"', '"bench-bin/litestream"')
        toml.write_text(text)

        def build(version: str, app: str, litestream: str) -> release.Signed:
            shutil.copy(bins / f"scoreboard-{app}", bins / "scoreboard")
            shutil.copy(bins / f"litestream-{litestream}", bins / "litestream")
            os.environ["DEPLOY_VERSION"] = version
            cfg = load_config(toml)
            return release.sign_release(cfg, release.build(cfg))

        images = {
            "first deploy": (build("r1", "u1", "1"), None),
            "app-only change": (build("r2", "u2", "1"), "r1"),
            "Litestream-only change": (build("r3", "u2", "2"), "r2"),
            "no change (new name)": (build("r4", "u2", "2"), "r3"),
        }
        cfg = load_config(toml)
        layout = Layout(cfg.app.name)
        relay = Relay(b.vm.ssh_port)
        known = b.root / "relay_known_hosts"
        known.write_text(
            b.vm.known_hosts.read_text().replace(
                f"[127.0.0.1]:{b.vm.ssh_port}", f"[127.0.0.1]:{relay.port}"
            )
        )
        target = Target("sandbox", "127.0.0.1", relay.port, "root", b.vm.key, known)
        with Host(
            Target("sandbox", "127.0.0.1", b.vm.ssh_port, "root", b.vm.key, b.vm.known_hosts)
        ) as direct:
            preflight.set_up_if_new(direct, cfg)

        def forget(name: str) -> None:
            r = f"{cfg.app.name}_{name}"
            b.ssh(
                f"rm -f {layout.image(r)} {layout.index(r)} {layout.manifest(r)} "
                f"{layout.signature(r)} {REMOTE_RSYNC}; rm -rf {layout.partial_dir}"
            )

        def tool(signed: release.Signed, delta: bool) -> Measure:
            c = dataclasses.replace(cfg, upload=UploadConfig(delta=delta))
            steps = ui.Steps()
            start = time.monotonic()
            with Host(target) as host:
                pipeline.upload_to(host, c, signed, steps)
            took = time.monotonic() - start
            # The upload step alone: inventory, send, assemble, check, install; not the SSH
            # connection, the lock, the state read or the audit record.
            step = sum(t for name, t in steps.timings if name.startswith("upload "))
            return Measure(relay.up, relay.down, took, step)

        def rsync(signed: release.Signed, basis: str | None) -> Measure:
            if basis is not None:
                b.ssh(f"cp {layout.image(cfg.app.name + '_' + basis)} {REMOTE_RSYNC}")
            relay.reset(relay_rate[0])
            ssh = (
                f"ssh -p {relay.port} -i {b.vm.key} -o UserKnownHostsFile={known} "
                "-o StrictHostKeyChecking=yes -o BatchMode=yes"
            )
            start = time.monotonic()
            subprocess.run(
                [
                    "rsync",
                    "-e",
                    ssh,
                    "--no-whole-file",
                    str(signed.artifact.image),
                    f"root@127.0.0.1:{REMOTE_RSYNC}",
                ],
                check=True,
            )
            took = time.monotonic() - start
            return Measure(relay.up, relay.down, took)

        relay_rate: list[float | None] = [None]
        rows = []
        for scenario, (signed, basis) in images.items():
            size = signed.manifest.image_size
            index_bytes = len(Index.of_file(signed.artifact.image).records) * RECORD.size
            for rate in (None, args.rate_mbit):
                relay_rate[0] = rate
                name = signed.manifest.release.split("_", 1)[1]
                forget(name)
                relay.reset(rate)
                whole = tool(signed, delta=False)
                forget(name)
                rs = rsync(signed, basis)
                forget(name)
                relay.reset(rate)
                delta = tool(signed, delta=True)  # left on the host for the next scenario
                rows.append((scenario, rate, size, index_bytes, delta, whole, rs))
                print(
                    f"{scenario} @ {rate or 'full'}: delta {_kb(delta.total)} {delta.seconds:.1f}s, "
                    f"whole {_kb(whole.total)} {whole.seconds:.1f}s, rsync {_kb(rs.total)} "
                    f"{rs.seconds:.1f}s",
                    flush=True,
                )
        _report(rows, args.rate_mbit)


def _report(
    rows: list[tuple[str, float | None, int, int, Measure, Measure, Measure]], rate: float
) -> None:
    print()
    print(
        "| change | link | image | delta: up / down (total) | time (upload step) | whole image: total "
        "| time | rsync: up / down (total) | time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scenario, link, size, _, d, w, r in rows:
        print(
            f"| {scenario} | {f'{link:g} Mbit/s' if link else 'loopback'} | {_kb(size)} "
            f"| {_kb(d.up)} / {_kb(d.down)} ({_kb(d.total)}) | {d.seconds:.1f} s ({d.step:.1f} s) "
            f"| {_kb(w.total)} | {w.seconds:.1f} s "
            f"| {_kb(r.up)} / {_kb(r.down)} ({_kb(r.total)}) | {r.seconds:.1f} s |"
        )
    print()
    print("| target | change | figure | result |")
    print("|---|---|---|---|")
    for scenario, link, size, index_bytes, d, _, r in rows:
        if link is None:
            ok = d.total <= r.total
            print(
                f"| bytes on the wire <= rsync's | {scenario} | {_kb(d.total)} vs {_kb(r.total)} "
                f"({d.total / r.total:.2f}x) | {'met' if ok else 'NOT met'} |"
            )
            share = index_bytes / size
            print(
                f"| index <= 0.5 % of the image | {scenario} | {_kb(index_bytes)} = "
                f"{share:.2%} | {'met' if share <= 0.005 else 'NOT met'} |"
            )
        else:
            ratio = d.seconds / r.seconds
            print(
                f"| time at {rate:g} Mbit/s <= 1.2x rsync's | {scenario} | {d.seconds:.1f} s vs "
                f"{r.seconds:.1f} s ({ratio:.2f}x; upload step alone {d.step:.1f} s, "
                f"{d.step / r.seconds:.2f}x) | {'met' if ratio <= 1.2 else 'NOT met'} |"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""A Let's Encrypt test CA inside a sandbox VM: Debian's ``pebble``, reached only on loopback.

pebble runs as a transient unit in the VM and validates HTTP-01 challenges by connecting to
port 80 of the VM itself (the app's socket-activated port), so an app gets a real certificate
through the real ACME protocol with no traffic leaving the machine. The VM's /etc/hosts maps
the test domains to 127.0.0.1, and pebble's listener certificate joins the VM's CA store, which
the app trusts through its ``BindReadOnlyPaths=/etc/ssl/certs``, exactly as a host's store
holds Let's Encrypt's roots.

pebble keeps everything in memory and makes a new issuing root at each start: fetch the root
from ``ROOT_URL`` (in the VM) after starting it, to check the served certificates.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Sequence

from .vm import VM

UNIT = "pd-sandbox-pebble"
CONFIG_DIR = "/etc/pd-sandbox-pebble"
DIRECTORY_URL = "https://127.0.0.1:14000/dir"
#: pebble's management API (in the VM): the current issuing root, PEM.
ROOT_URL = "https://127.0.0.1:15000/roots/0"
#: The line pebble logs for each certificate it issues.
ISSUED = "Issued certificate serial"
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")

_CONFIG = {
    "pebble": {
        "listenAddress": "127.0.0.1:14000",
        "managementListenAddress": "127.0.0.1:15000",
        "certificate": f"{CONFIG_DIR}/listener.crt",
        "privateKey": f"{CONFIG_DIR}/listener.key",
        # HTTP-01 and TLS-ALPN-01 are checked on the standard ports, as Let's Encrypt does.
        "httpPort": 80,
        "tlsPort": 443,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
}


def start_script(domains: Sequence[str]) -> str:
    """A root shell script for the VM: pebble up (once), DOMAINS resolving to the VM, then the
    current issuing root on stdout."""
    for domain in domains:
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"not a DNS name: {domain!r}")
    d = CONFIG_DIR
    hosts = "".join(
        f"grep -qE '^127\\.0\\.0\\.1[[:space:]]+{re.escape(x)}$' /etc/hosts || "
        f"echo '127.0.0.1 {x}' >> /etc/hosts; "
        for x in domains
    )
    return (
        "set -eu; "
        f"mkdir -p {d}; "
        f"if [ ! -f {d}/listener.crt ]; then "
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
        f"-subj /CN=pd-sandbox-pebble -addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
        f"-keyout {d}/listener.key -out {d}/listener.crt 2>/dev/null; "
        f"cp {d}/listener.crt /usr/local/share/ca-certificates/pd-sandbox-pebble.crt; "
        "update-ca-certificates >/dev/null 2>&1; fi; "
        f"printf '%s' {shlex.quote(json.dumps(_CONFIG))} > {d}/config.json; "
        f"{hosts}"
        f"systemctl is-active -q {UNIT} || systemd-run -q --unit={UNIT} "
        f"--setenv=PEBBLE_VA_NOSLEEP=1 --setenv=PEBBLE_WFE_NONCEREJECT=0 /usr/bin/pebble -config {d}/config.json; "
        "i=0; until curl -fsS -o /dev/null https://127.0.0.1:14000/dir; do "
        'i=$((i+1)); [ "$i" -lt 100 ] || { echo "pebble did not answer" >&2; exit 1; }; '
        "sleep 0.2; done; "
        f"curl -fsS {ROOT_URL}"
    )


def start(vm: VM, domains: Sequence[str], timeout: float = 120) -> str:
    """Start pebble in VM for DOMAINS (idempotent); return its issuing root certificate (PEM)."""
    out = subprocess.run(
        vm.ssh_argv([start_script(domains)], batch=True),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0 or "BEGIN CERTIFICATE" not in out.stdout:
        raise RuntimeError(f"pebble did not start on {vm.name}: {out.stderr.strip()[-500:]}")
    return out.stdout


def issued_count_script() -> str:
    """How many certificates pebble has issued since it started (from its journal)."""
    return f"journalctl -u {UNIT} -o cat --no-pager | grep -c {shlex.quote(ISSUED)} || true"

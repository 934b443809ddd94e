"""An SFTP replica target inside a sandbox VM: the VM's own sshd, an unprivileged ``replica``
user allowed SFTP only, for Litestream's off-host replica in tests (no traffic leaves the VM).

The sandbox sshd has one host key (ed25519), which is what Litestream pins.
"""

from __future__ import annotations

import shlex

USER = "replica"
HOME = f"/home/{USER}"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"


def setup_script(public_key: str) -> str:
    """A root shell script for the VM: the replica user, SFTP only, trusting PUBLIC_KEY; prints
    the VM's host key line (what Litestream's host-key pins)."""
    key = shlex.quote(public_key.strip())
    return (
        "set -eu; "
        f"id {USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {USER}; "
        # useradd leaves the password field '!' (locked): sshd refuses a locked account.
        f"usermod -p '*' {USER}; "
        f"install -d -m 0700 -o {USER} -g {USER} {HOME}/.ssh {HOME}/replicas; "
        f"printf '%s\\n' {key} > {HOME}/.ssh/authorized_keys; "
        f"chown {USER}: {HOME}/.ssh/authorized_keys; chmod 0600 {HOME}/.ssh/authorized_keys; "
        # Debian's sshd_config includes sshd_config.d/ at its top, where a Match block would
        # swallow the rest of the file: the block goes at the end of the main file, once.
        f"grep -q '^Match User {USER}$' /etc/ssh/sshd_config || printf '\\nMatch User {USER}\\n"
        "  ForceCommand internal-sftp\\n  AllowTcpForwarding no\\n' >> /etc/ssh/sshd_config; "
        # A reload re-executes sshd, which closes port 22 for a moment: wait until it listens.
        "sshd -t; systemctl reload ssh; sleep 1; i=0; "
        "until ss -Hltn 'sport = :22' | grep -q .; do i=$((i+1)); [ $i -lt 100 ] || exit 1; "
        "sleep 0.2; done; "
        f"cut -d' ' -f1,2 {HOST_KEY}"
    )

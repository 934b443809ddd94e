#!/bin/sh
# Runs at every boot of a sandbox VM, before sshd: installs root's authorized key and the
# hostname line of /etc/hosts from the kernel command line that `Sandbox.up` wrote. The key is
# per sandbox and never part of the shared base image.
set -eu

key=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        portable_deploy.authorized_key=*) key="${word#portable_deploy.authorized_key=}" ;;
    esac
done

name="$(cat /proc/sys/kernel/hostname)"
# minbase has no /etc/hosts; without one "localhost" does not resolve and SSH forwards to it fail.
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$name" \
    > /etc/hosts.new
mv /etc/hosts.new /etc/hosts

[ -n "$key" ] || exit 0
umask 077
mkdir -p /root/.ssh
chmod 0700 /root/.ssh
printf '%s' "$key" | base64 -d > /root/.ssh/authorized_keys.new
chmod 0600 /root/.ssh/authorized_keys.new
mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys

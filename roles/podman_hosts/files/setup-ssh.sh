#!/bin/sh
# Run as root inside a new podman host (podman exec -i NAME /bin/sh -s -- USER PORT ADDRESS PUBKEY):
# waits for systemd, makes the host keys, the login user (key only, NOPASSWD sudo) and the sshd
# drop-in (own port, loopback only, no root, no passwords), then starts sshd. Idempotent: prints
# "changed=0" when everything was already so, and the host's ed25519 key for known_hosts.
set -eu
user=$1
port=$2
address=$3
pubkey=$4
changed=0
sshd_changed=0

# put PATH MODE OWNER GROUP: write stdin to PATH when its content or mode differs; status 0 when
# it wrote. Every call reads a pipeline, so put runs in a subshell: the caller sets changed.
put() {
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$1" ] && cmp -s "$tmp" "$1" && [ "$(stat -c '%a %U %G' "$1")" = "${2#0} $3 $4" ]; then
        rm -f "$tmp"
        return 1
    fi
    install -m "$2" -o "$3" -g "$4" "$tmp" "$1"
    rm -f "$tmp"
}

# degraded (a unit failed) still lets sshd run; the wait ends when boot has finished.
timeout 60 systemctl is-system-running --wait >/dev/null 2>&1 || true

# sudo resolves the host's own name; podman's /etc/hosts for the host network lacks it.
if ! grep -qw "$(hostname)" /etc/hosts; then
    printf '127.0.1.1 %s\n' "$(hostname)" >>/etc/hosts
    changed=1
fi
if [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -A >/dev/null
    changed=1
fi
if ! id -u "$user" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$user"
    changed=1
fi
home=$(getent passwd "$user" | cut -d: -f6)
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
printf '%s\n' "$pubkey" | put "$home/.ssh/authorized_keys" 0600 "$user" "$user" && changed=1 || true
printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$user" | put /etc/sudoers.d/90-openpolicy-login 0440 root root && changed=1 || true
visudo -cqf /etc/sudoers.d/90-openpolicy-login
printf 'Port %s\nListenAddress %s\nPermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nAllowUsers %s\n' \
    "$port" "$address" "$user" | put /etc/ssh/sshd_config.d/50-openpolicy.conf 0644 root root && sshd_changed=1 && changed=1

if ! systemctl is-enabled --quiet ssh.service; then
    systemctl enable --quiet ssh.service
    changed=1
fi
if [ "$sshd_changed" = 1 ]; then
    systemctl restart ssh.service
elif ! systemctl is-active --quiet ssh.service; then
    systemctl start ssh.service
    changed=1
fi

echo "changed=$changed"
echo "hostkey=$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)"

#!/bin/sh
# The Debian package under a real systemd (cargo xtask vm-test-systemd).
# Run by guardrail-vm-test.service once Debian 12 has booted with systemd
# as PID 1 on its own kernel and default LSM list. It does what an
# administrator does — apt install, systemctl start/reload/restart/stop,
# an upgrade, remove and purge — and checks what they would check. Each
# check prints "GUARDRAIL-VM: PASS name" or "GUARDRAIL-VM: FAIL name:
# detail"; lines "GUARDRAIL-VM: log ..." are diagnostics.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
# FIRST, FIRST_VERSION, UPGRADE, UPGRADE_VERSION, RULES: the packages in /vm.
. /vm/env

echo "GUARDRAIL-VM: kernel $(uname -r), lsm=$(cat /sys/kernel/security/lsm 2>/dev/null), pid 1 $(cat /proc/1/comm), cmdline $(cat /proc/cmdline)"

pass() { echo "GUARDRAIL-VM: PASS $1"; }
fail() { echo "GUARDRAIL-VM: FAIL $1: $2"; }
check() { name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }
# For what happens asynchronously (journal entries, the audit log, a unit
# state): the condition is tried every 0.1 s for up to 120 s (TCG is slow,
# and slower still on a loaded host) before the check fails.
holds_within_120s() {
    n=0
    until "$@"; do
        n=$((n + 1))
        [ $n -ge 1200 ] && return 1
        sleep 0.1
    done
}
eventually() { name=$1; shift; check "$name" holds_within_120s "$@"; }
same() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
diagnose() { sed 's/^/GUARDRAIL-VM: log /' "$@"; }
finish() {
    echo "GUARDRAIL-VM: DONE"
    sync
    systemctl poweroff --force --force
    exit 0
}

show() { systemctl show -p "$1" --value guardrail-agent; }
active() { [ "$(systemctl is-active guardrail-agent)" = active ]; }
installed() { [ "$(dpkg-query -W -f='${Status} ${Version}' guardrail 2>/dev/null)" = "install ok installed $1" ]; }
# What the agent of one run of the unit (its invocation id) wrote to the
# journal: its own log lines and, with the journald output, its events.
run_log() { journalctl -q -o cat _SYSTEMD_INVOCATION_ID="$1"; }
logged() { run_log "$1" | grep -q "$2"; }
# After each start: the unit's current run.
started() {
    PID=$(show MainPID)
    INV=$(show InvocationID)
}
agent_diagnostics() {
    systemctl status --no-pager guardrail-agent > /tmp/unit-status.txt 2>&1
    # The agent's and systemd's lines, without the events the journald
    # output writes (identifier "guardrail").
    journalctl -q -b -u guardrail-agent --no-pager | grep -v ' guardrail\[[0-9]*\]: ' | tail -n 60 >> /tmp/unit-status.txt
    diagnose /tmp/unit-status.txt
}

# The machine as Debian boots it: systemd is init, and BPF-LSM is on
# without any lsm= parameter because Debian's CONFIG_LSM lists bpf.
check boot-systemd-is-pid1 [ "$(cat /proc/1/comm)" = systemd ]
check boot-no-lsm-parameter sh -c '! grep -q "lsm=" /proc/cmdline'
check boot-bpf-in-default-lsm-list grep -qw bpf /sys/kernel/security/lsm

# /etc/ld.so.preload exists, empty: deny rules protect inodes, and one
# naming a path that does not exist protects nothing until the rules are
# refreshed after it appears (checked below as a known limit). The
# shipped rule preload-hijack is what the scenarios write against.
: > /etc/ld.so.preload
unchanged_preload() { [ -f /etc/ld.so.preload ] && [ ! -s /etc/ld.so.preload ]; }

# Install as the documentation says.
(cd /vm && timeout 900 apt install -y "./$FIRST") > /tmp/apt-install.log 2>&1
rc=$?
check apt-install [ $rc -eq 0 ]
[ $rc -eq 0 ] || diagnose /tmp/apt-install.log
check apt-installed-version installed "$FIRST_VERSION"
check unit-enabled [ "$(systemctl is-enabled guardrail-agent)" = enabled ]
# Type=notify: the unit is active only once the agent sent READY=1, after
# its probes attached and its rules were in force.
check unit-type-notify [ "$(show Type)" = notify ]
eventually unit-active-ready active
active || { agent_diagnostics; finish; }
started
check unit-ready-after-running logged "$INV" "guardrail-agent running"
fresh() { ! logged "$INV" "adopted the pinned state"; }
check unit-fresh-state-on-first-start fresh

# Hardening as the unit sets it, seen by the kernel. CapBnd is exactly
# CAP_CHOWN(0) CAP_DAC_READ_SEARCH(2) CAP_FOWNER(3) CAP_SYS_PTRACE(19)
# CAP_SYS_ADMIN(21) CAP_SYS_RESOURCE(24) CAP_PERFMON(38) CAP_BPF(39).
proc_field() { sed -n "s/^$1:[[:space:]]*//p" /proc/$PID/status; }
check hardening-capability-bounding-set [ "$(proc_field CapBnd)" = 000000c00128000d ]
check hardening-effective-within-bounding-set [ "$(proc_field CapEff)" = 000000c00128000d ]
check hardening-no-new-privileges [ "$(proc_field NoNewPrivs)" = 1 ]
# SystemCallArchitectures, RestrictAddressFamilies, MemoryDenyWriteExecute
# and the rest are seccomp filters.
check hardening-seccomp-filter [ "$(proc_field Seccomp)" = 2 ]
[ "$(proc_field CapBnd)" = 000000c00128000d ] || diagnose /proc/$PID/status

guardrail status > /tmp/status.txt 2>&1
check status-bpf-lsm grep -q "BPF-LSM (deny)    yes" /tmp/status.txt
grep -q "BPF-LSM (deny)    yes" /tmp/status.txt || diagnose /tmp/status.txt

# Capture: a setuid chmod shows in `guardrail tail` and the audit log.
touch /root/vm-captured
chmod 4755 /root/vm-captured
tail_has_chmod() {
    timeout 60 guardrail tail --since 10m --json --kind perm --path /root/vm-captured -n 1 2>/dev/null | grep -q '"mode":"4755"'
}
eventually capture-in-tail tail_has_chmod
log_has_chmod() {
    grep '"op":"chmod","path":"/root/vm-captured"' /var/log/guardrail/audit.jsonl 2>/dev/null | grep -q '"mode":"4755"'
}
eventually capture-in-audit-log log_has_chmod

# Deny with the shipped rule preload-hijack.
(echo evil > /etc/ld.so.preload) 2> /tmp/preload.err
check deny-preload-eperm grep -q "Operation not permitted" /tmp/preload.err
check deny-preload-not-written unchanged_preload
denied_logged() {
    grep -q '"rule":"preload-hijack","action":"deny","mode":"enforce","severity":"critical","outcome":"denied"' /var/log/guardrail/audit.jsonl
}
eventually deny-preload-in-audit-log denied_logged

# Self-protection: only init (systemd) may stop the agent; its
# configuration does not change while it runs.
check self-protection-kill-refused sh -c "! kill -9 $PID 2>/dev/null && kill -0 $PID"
sum=$(md5sum /etc/guardrail/guardrail.toml)
(echo '# tampered' >> /etc/guardrail/guardrail.toml) 2>/dev/null
check self-protection-config-unchanged [ "$(md5sum /etc/guardrail/guardrail.toml)" = "$sum" ]
check no-journald-output-by-default sh -c '[ -z "$(journalctl -q -o cat SYSLOG_IDENTIFIER=guardrail)" ]'

# systemctl stop, as documented: the process is gone, the rules stay
# enforced from the pinned state, the configuration may be edited.
STOPPED=$INV
timeout 300 systemctl stop guardrail-agent
check stop-inactive [ "$(systemctl is-active guardrail-agent)" = inactive ]
check stop-process-gone sh -c "! kill -0 $PID 2>/dev/null"
check stop-clean-exit [ "$(show ExecMainStatus)" = 0 ]
check stop-state-pinned [ -d /sys/fs/bpf/guardrail ]
(echo evil > /etc/ld.so.preload) 2>/dev/null
check stop-still-enforces unchanged_preload
check stop-self-protection-lifted logged "$STOPPED" "self-protection lifted"
# Edit: include conf.d/ (rules added by packages) and send events to the
# journal.
mkdir -p /etc/guardrail/conf.d
sed -i '1i include = ["conf.d/*.toml"]' /etc/guardrail/guardrail.toml
printf '\n[[output]]\ntype = "journald"\n' >> /etc/guardrail/guardrail.toml
check stop-config-editable grep -q 'type = "journald"' /etc/guardrail/guardrail.toml
# The rule does not cover unlink: the file may go, and the next agent
# finds its path missing.
rm /etc/ld.so.preload

# systemctl start adopts what the stopped agent left.
timeout 300 systemctl start guardrail-agent
check start-after-stop active
active || { agent_diagnostics; finish; }
started
check start-adopted-pinned-state logged "$INV" "adopted the pinned state"

# Known limit: a deny rule's path that does not exist is not protected —
# creating it is not denied — until the rules are refreshed (a reload or
# restart) after it appears. The agent says so when it loads the rules.
missing_warned() { run_log "$INV" | grep "does not exist" | grep -q /etc/ld.so.preload; }
check known-limit-missing-path-warned missing_warned
(: > /etc/ld.so.preload) 2>/dev/null
check known-limit-create-of-missing-path-not-denied [ -e /etc/ld.so.preload ]

# systemctl reload: a rule a package adds to conf.d/ is enforced.
mkdir -p /srv
echo before > /srv/vm-reload-target
check reload-target-free-before same /srv/vm-reload-target before
dpkg -i "/vm/$RULES" > /tmp/dpkg-rules.log 2>&1
check reload-rules-installed-by-dpkg [ -f /etc/guardrail/conf.d/vm-reload.toml ]
[ -f /etc/guardrail/conf.d/vm-reload.toml ] || diagnose /tmp/dpkg-rules.log
timeout 300 systemctl reload guardrail-agent
check reload-systemctl [ $? -eq 0 ]
reloaded() { logged "$INV" "SIGHUP: configuration reloaded"; }
eventually reload-sighup-applied reloaded
(echo after > /srv/vm-reload-target) 2>/dev/null
check reload-new-rule-enforced same /srv/vm-reload-target before
check reload-same-process [ "$(show MainPID)" = "$PID" ]
(echo evil > /etc/ld.so.preload) 2>/dev/null
check path-protected-once-it-appeared unchanged_preload

# The journald output lands in the system journal, with its fields.
journal_has_denial() {
    journalctl -q -o cat SYSLOG_IDENTIFIER=guardrail GUARDRAIL_RULE=preload-hijack GUARDRAIL_OUTCOME=denied | grep -q .
}
eventually journald-output-in-journal journal_has_denial
journal_has_event_json() {
    journalctl -q -o verbose SYSLOG_IDENTIFIER=guardrail GUARDRAIL_RULE=preload-hijack | grep -q 'GUARDRAIL_EVENT={'
}
check journald-output-event-json journal_has_event_json

# Hand-overs under a loop of forbidden writes: systemctl restart, then an
# upgrade to a newer package with apt. None of the writes may get through,
# and the loop must have been writing while each ran. The loop paces
# itself (50 attempts a second at most): unpaced, it saturated the one
# emulated CPU, and the agent, journald, apt and systemd starved (a stop
# ran past TimeoutStopSec).
rm -f /tmp/stop-loop /tmp/loop-n
(
    i=0
    while [ ! -e /tmp/stop-loop ]; do
        (echo evil > /etc/ld.so.preload) 2>/dev/null
        i=$((i + 1))
        echo $i > /tmp/loop-n
        sleep 0.02
    done
) &
LOOP=$!
attempts() { cat /tmp/loop-n 2>/dev/null || echo 0; }
loop_running() { [ "$(attempts)" -gt 0 ]; }
check handover-loop-started holds_within_120s loop_running

OLD=$PID
before=$(attempts)
timeout 300 systemctl restart guardrail-agent
rc=$?
after=$(attempts)
check restart-systemctl [ $rc -eq 0 ]
check restart-active active
started
check restart-new-process [ "$PID" != "$OLD" ]
check restart-writes-attempted-across [ "$after" -gt "$before" ]
check restart-adopted-pinned-state logged "$INV" "adopted the pinned state"
check restart-none-through unchanged_preload

# The newer package is a build with other probes (xtask builds it with
# `--features upgrade-test-variant`): the upgrade hands over between two
# different sets of programs.
probes() { guardrail status --json 2>/dev/null | grep -o '"probes":"[0-9a-f]*"'; }
PROBES_BEFORE=$(probes)
OLD=$PID
before=$(attempts)
(cd /vm && timeout 900 apt install -y "./$UPGRADE") > /tmp/apt-upgrade.log 2>&1
rc=$?
after=$(attempts)
check upgrade-apt-install [ $rc -eq 0 ]
[ $rc -eq 0 ] || diagnose /tmp/apt-upgrade.log
check upgrade-installed-version installed "$UPGRADE_VERSION"
check upgrade-active active
started
check upgrade-new-process [ "$PID" != "$OLD" ]
check upgrade-writes-attempted-across [ "$after" -gt "$before" ]
check upgrade-adopted-pinned-state logged "$INV" "adopted the pinned state"
upgraded_probes_differ() { p=$(probes); [ -n "$PROBES_BEFORE" ] && [ -n "$p" ] && [ "$p" != "$PROBES_BEFORE" ]; }
check upgrade-other-probes holds_within_120s upgraded_probes_differ
check upgrade-keeps-edited-config grep -q 'type = "journald"' /etc/guardrail/guardrail.toml
touch /tmp/stop-loop
wait $LOOP
echo "GUARDRAIL-VM: log $(attempts) forbidden writes attempted across the restart and the upgrade"
check handover-none-through unchanged_preload
check handover-reload-rule-kept same /srv/vm-reload-target before
check unit-never-failed [ "$(show NRestarts)" = 0 ]
check audit-chain-continuous guardrail log verify /var/log/guardrail/audit.jsonl
active || agent_diagnostics

# An agent killed without a clean stop (SIGKILL here, as the OOM killer
# would) and not started again leaves self-protection in force: the
# configuration and the binaries cannot change. A package upgrade (here
# a reinstall, which runs the same maintainer scripts) still goes
# through: preinst lifts only self-protection, every other rule stays
# enforced, and the new agent adopts the pinned state.
systemctl kill -s KILL guardrail-agent
systemctl stop guardrail-agent
check killed-agent-not-running sh -c '! pgrep -x guardrail-agent'
protected_config() { ! (echo '# edited' >> /etc/guardrail/guardrail.toml) 2>/dev/null; }
check killed-self-protection-stays protected_config
(cd /vm && timeout 900 apt install --reinstall -y "./$UPGRADE") > /tmp/apt-reinstall.log 2>&1
rc=$?
check killed-then-upgrade-apt [ $rc -eq 0 ]
[ $rc -eq 0 ] || diagnose /tmp/apt-reinstall.log
check killed-then-upgrade-lifted grep -q "lifted guardrail-self-protection" /tmp/apt-reinstall.log
eventually killed-then-upgrade-active active
started
check killed-then-upgrade-adopted logged "$INV" "adopted the pinned state"
(echo evil > /etc/ld.so.preload) 2>/dev/null
check killed-then-upgrade-still-denies unchanged_preload
eventually killed-then-upgrade-protected-again protected_config

# apt remove stops and unloads: nothing of guardrail stays in the kernel;
# the configuration stays. apt purge removes the rest.
(timeout 900 apt remove -y guardrail) > /tmp/apt-remove.log 2>&1
check remove-apt [ $? -eq 0 ]
check remove-agent-gone sh -c '! pgrep -x guardrail-agent'
check remove-nothing-pinned [ ! -e /sys/fs/bpf/guardrail ]
(echo removed > /etc/ld.so.preload) 2>/dev/null
check remove-rule-no-longer-enforced same /etc/ld.so.preload removed
rm -f /etc/ld.so.preload
check remove-keeps-config [ -f /etc/guardrail/guardrail.toml ]
(timeout 900 apt purge -y guardrail guardrail-vm-rules) > /tmp/apt-purge.log 2>&1
rc=$?
check purge-apt [ $rc -eq 0 ]
[ $rc -eq 0 ] || diagnose /tmp/apt-purge.log
check purge-nothing-pinned [ ! -e /sys/fs/bpf/guardrail ]
check purge-config-and-logs-gone sh -c '[ ! -e /etc/guardrail ] && [ ! -e /var/log/guardrail ]'
check purge-unit-gone [ "$(show LoadState)" = not-found ]
(echo free > /srv/vm-reload-target) 2>/dev/null
check purge-released same /srv/vm-reload-target free
finish

#!/bin/sh
# Enforcement scenarios, run inside the VM. Each check prints
# "GUARDRAIL-VM: PASS name" or "GUARDRAIL-VM: FAIL name: detail"; the host
# (cargo xtask vm-test) collects them.

pass() { echo "GUARDRAIL-VM: PASS $1"; }
fail() { echo "GUARDRAIL-VM: FAIL $1: $2"; }
check() { name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }

/bin/guardrail-agent --config /etc/guardrail/guardrail.toml --print json > /tmp/events.jsonl 2> /tmp/agent.log &
AGENT=$!
i=0
while [ ! -S /run/guardrail/guardrail.sock ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
if [ ! -S /run/guardrail/guardrail.sock ]; then
    fail agent-start "$(cat /tmp/agent.log)"
    exit 0
fi
pass agent-start

# Capture works on this kernel: a chmod is reported with its mode.
touch /tmp/captured
chmod 4755 /tmp/captured
sleep 1
check capture-chmod grep -q '"path":"/tmp/captured","mode":"4755"' /tmp/events.jsonl

/bin/guardrail status > /tmp/status.txt 2>&1
check status-answers grep -q "tracepoints" /tmp/status.txt

kill -TERM $AGENT
wait $AGENT
check agent-stops-cleanly [ $? -eq 0 ]

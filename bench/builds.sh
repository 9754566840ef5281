#!/bin/bash
# Two builds of the agent under the same storm, in the same run: for a
# question `cargo xtask bench` cannot answer alone, "does this build cost
# more than that one?" (an older commit's agent has other options and
# rules, so it runs with its own binary and configuration).
#
#   bench/builds.sh ROUNDS "STORM ARGS" BIN_A CONF_A BIN_B CONF_B [B_FLAGS]
#
# STORM ARGS are bench/storm.c's arguments, the second being the storm's
# iterations N (open, write, exec, chmod, unwatched, uring-create).
#
# e.g. the open storm of docs/performance.md, a 2026-11-27 build against
# today's (configurations in a root-only directory, each with its own
# audit log path):
#   gcc -O2 -o /tmp/storm bench/storm.c
#   mkdir -p /dev/shm/storm && touch /dev/shm/storm/f
#   bench/builds.sh 12 "open 1000000 /dev/shm/storm/f" \
#       ../old/target/release/guardrail-agent /root/b/old.toml \
#       target/release/guardrail-agent /root/b/new.toml --ephemeral
#
# Each round runs the storm bare, then under A; bare, then under B (B
# first in every other round). A line per run: which build, the bare
# and loaded seconds, their ratio. Then each build's median ratio and
# added nanoseconds per storm iteration.
set -euo pipefail
[ $# -ge 6 ] || { sed -n '2,/^set -euo/p' "$0" | grep '^#'; exit 2; }
ROUNDS=$1 STORM=$2 BIN_A=$3 CONF_A=$4 BIN_B=$5 CONF_B=$6 B_FLAGS=${7:-}
STORM_BIN=${STORM_BIN:-/tmp/storm}
N=$(echo "$STORM" | awk '{print $2}')
RUN=$(mktemp -d)
trap 'rm -rf "$RUN"' EXIT

seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$STORM_BIN" $STORM
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}

# Under an agent: started, ready (its control socket), the storm, stopped.
# Run in a subshell (`$(under …)`): its trap stops the agent however the
# subshell ends (an error, a timeout, Ctrl-C).
under() {
    local bin=$1 conf=$2 flags=$3 pid t
    rm -f "$RUN/sock"
    # shellcheck disable=SC2086
    "$bin" --config "$conf" --socket "$RUN/sock" $flags >"$RUN/agent.out" 2>&1 &
    pid=$!
    # shellcheck disable=SC2064 # this agent's pid, now
    trap "kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null" EXIT
    for _ in $(seq 600); do
        [ -S "$RUN/sock" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$RUN/agent.out" >&2; exit 1; }
        sleep 0.1
    done
    [ -S "$RUN/sock" ] || { echo "$bin: no control socket after 60 s" >&2; exit 1; }
    t=$(seconds)
    echo "$t"
}

for r in $(seq "$ROUNDS"); do
    order="A B"
    [ $((r % 2)) = 0 ] && order="B A"
    for w in $order; do
        bare=$(seconds)
        if [ "$w" = A ]; then
            with=$(under "$BIN_A" "$CONF_A" "")
        else
            with=$(under "$BIN_B" "$CONF_B" "$B_FLAGS")
        fi
        echo "$w bare $bare with $with ratio $(echo "scale=3; $with / $bare" | bc)" | tee -a "$RUN/runs"
    done
done
median() { sort -n | awk '{v[NR] = $1} END {printf "%.3f %.3f %.3f\n", (v[int((NR + 1) / 2)] + v[int(NR / 2) + 1]) / 2, v[1], v[NR]}'; }
for w in A B; do
    read -r ratio lo hi < <(grep "^$w " "$RUN/runs" | awk '{print $7}' | median)
    read -r added _ _ < <(grep "^$w " "$RUN/runs" | awk -v n="$N" '{print ($5 - $3) * 1e9 / n}' | median)
    printf "%s: ratio median %s (%s-%s), added ns per iteration median %.0f\n" "$w" "$ratio" "$lo" "$hi" "$added"
done

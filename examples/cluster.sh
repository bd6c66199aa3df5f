#!/usr/bin/env bash
# A 3-server ippool cluster on this machine, for trying failover by hand.
#
#   examples/cluster.sh start        # build ippool, start s1..s3, wait for a leader
#   examples/cluster.sh status       # ippool cluster status
#   examples/cluster.sh kill-leader  # SIGKILL the leader; writes continue on the others
#   examples/cluster.sh restart ID   # restart a stopped server from its data dir
#   examples/cluster.sh stop         # SIGTERM every server
#
# Servers listen for HTTP on 127.0.0.1:7480, 7482, 7484 and for each other on
# 7481, 7483, 7485; server sI keeps its state in ./cluster-data/sI and its log
# in ./cluster-data/sI.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-cluster-data}
BIN=${BIN:-$DATA/ippool}
HTTP=(127.0.0.1:7480 127.0.0.1:7482 127.0.0.1:7484)
CLUSTER=(127.0.0.1:7481 127.0.0.1:7483 127.0.0.1:7485)
EXTRA=${EXTRA:-}
JOIN=$(IFS=,; echo "${CLUSTER[*]}")
export IPPOOL_ADDR=$(IFS=,; echo "${HTTP[*]}")

start_one() {
	local i=$1 id="s$1"
	local idx=$((i - 1))
	"$BIN" serve --id "$id" --data-dir "$DATA/$id" --http-addr "${HTTP[$idx]}" \
		--cluster-addr "${CLUSTER[$idx]}" --join "$JOIN" --bootstrap-expect 3 $EXTRA \
		>>"$DATA/$id.log" 2>&1 &
	echo $! >"$DATA/$id.pid"
	echo "started $id (pid $!) http=${HTTP[$idx]} cluster=${CLUSTER[$idx]}"
}

leader_pid() {
	local id
	id=$("$BIN" cluster status --json | sed -n 's/.*"leader_id": *"\([^"]*\)".*/\1/p' | head -1)
	[ -n "$id" ] && cat "$DATA/$id.pid"
}

wait_ready() {
	for _ in $(seq 100); do
		if [ -n "$(leader_pid 2>/dev/null)" ]; then
			"$BIN" cluster status
			return 0
		fi
		sleep 0.2
	done
	echo "no leader after 20s; see $DATA/*.log" >&2
	return 1
}

case "${1:-}" in
start)
	mkdir -p "$DATA"
	go build -o "$BIN" ./cmd/ippool
	for i in 1 2 3; do start_one "$i"; done
	wait_ready
	echo
	echo "try: IPPOOL_ADDR=$IPPOOL_ADDR $BIN alloc node1 example.com"
	;;
status)
	"$BIN" cluster status
	;;
kill-leader)
	pid=$(leader_pid)
	echo "SIGKILL leader (pid $pid)"
	kill -KILL "$pid"
	start=$(date +%s%N)
	until "$BIN" --timeout 1s alloc failover-probe "t$(date +%s%N).example" >/dev/null 2>&1; do sleep 0.05; done
	echo "first write after the kill succeeded in $(( ($(date +%s%N) - start) / 1000000 )) ms"
	;;
restart)
	start_one "${2#s}"
	;;
stop)
	for f in "$DATA"/s*.pid; do
		[ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
		rm -f "$f"
	done
	echo stopped
	;;
*)
	sed -n '2,13p' "$0"
	exit 2
	;;
esac

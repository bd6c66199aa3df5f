#!/usr/bin/env bash
# A 3-server ippool cluster on this machine, for trying failover by hand.
#
#   examples/cluster.sh start        # build ippool, make certificates once, start s1..s3, wait for a leader
#   examples/cluster.sh status       # ippool cluster status
#   examples/cluster.sh kill-leader  # SIGKILL the leader; writes continue on the others
#   examples/cluster.sh restart [ID] # restart a stopped server (default: every stopped one)
#   examples/cluster.sh stop         # SIGTERM every server, SIGKILL any still up after 10s
#
# Servers listen for HTTP on 127.0.0.1:7480, 7482, 7484 and for each other on
# 7481, 7483, 7485, over mutual TLS with a CA made by `ippool tls init` in
# ./cluster-data/tls (the CA key in tls/ca, server sI's files in
# tls/server-I); server sI keeps its state in ./cluster-data/sI and its log in
# ./cluster-data/sI.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-cluster-data}
BIN=${BIN:-$DATA/ippool}
HTTP=(127.0.0.1:7480 127.0.0.1:7482 127.0.0.1:7484)
CLUSTER=(127.0.0.1:7481 127.0.0.1:7483 127.0.0.1:7485)
EXTRA=${EXTRA:-}
JOIN=$(IFS=,; echo "${CLUSTER[*]}")
export IPPOOL_ADDR=$(IFS=,; echo "${HTTP[*]}")

# alive PID: the process runs. A killed server whose parent is gone may
# linger as a zombie until its new parent reaps it: that is not running.
alive() {
	kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]
}

# running ID: the pid of server ID if it is running, else nothing.
running() {
	local f="$DATA/$1.pid" pid
	[ -e "$f" ] || return 1
	pid=$(cat "$f")
	alive "$pid" && echo "$pid"
}

start_one() {
	local i=$1 id="s$1" pid
	local idx=$((i - 1))
	if pid=$(running "$id"); then
		echo "$id is already running (pid $pid)"
		return 0
	fi
	local tls="$DATA/tls/server-$i"
	"$BIN" serve --id "$id" --data-dir "$DATA/$id" --http-addr "${HTTP[$idx]}" \
		--cluster-addr "${CLUSTER[$idx]}" --join "$JOIN" --bootstrap-expect 3 \
		--tls-ca "$tls/ca.pem" --tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem" $EXTRA \
		>>"$DATA/$id.log" 2>&1 &
	echo $! >"$DATA/$id.pid"
	echo "started $id (pid $!) http=${HTTP[$idx]} cluster=${CLUSTER[$idx]}"
}

leader_id() {
	"$BIN" cluster status --json | sed -n 's/.*"leader_id": *"\([^"]*\)".*/\1/p' | head -1
}

wait_ready() {
	for _ in $(seq 100); do
		if [ -n "$(leader_id 2>/dev/null)" ]; then
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
	# The cluster port is never plain TCP without --insecure, loopback too.
	[ -e "$DATA/tls/ca/ca.pem" ] || "$BIN" tls init --dir "$DATA/tls" --servers 3 >/dev/null
	for i in 1 2 3; do start_one "$i"; done
	wait_ready
	echo
	echo "try: IPPOOL_ADDR=$IPPOOL_ADDR $BIN alloc node1 example.com"
	;;
status)
	"$BIN" cluster status
	;;
kill-leader)
	id=$(leader_id)
	pid=$(running "$id") || { echo "the leader $id is not one of this script's servers" >&2; exit 1; }
	echo "SIGKILL leader $id (pid $pid); bring it back with: examples/cluster.sh restart $id"
	kill -KILL "$pid"
	start=$(date +%s%N)
	until "$BIN" --timeout 1s alloc failover-probe "t$(date +%s%N).example" >/dev/null 2>&1; do sleep 0.05; done
	echo "first write after the kill succeeded in $(( ($(date +%s%N) - start) / 1000000 )) ms"
	;;
restart)
	if [ -n "${2:-}" ]; then
		start_one "${2#s}"
	else
		for i in 1 2 3; do running "s$i" >/dev/null || start_one "$i"; done
	fi
	;;
stop)
	pids=()
	for i in 1 2 3; do
		if pid=$(running "s$i"); then
			kill -TERM "$pid" && pids+=("$pid")
		fi
		rm -f "$DATA/s$i.pid"
	done
	# SIGTERM drains and hands leadership over; give it 10s, then SIGKILL.
	for _ in $(seq 100); do
		left=()
		for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
		[ ${#left[@]} -eq 0 ] && break
		sleep 0.1
	done
	for pid in "${left[@]}"; do
		echo "pid $pid did not stop within 10s; SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	done
	echo stopped
	;;
*)
	sed -n '2,14p' "$0"
	exit 2
	;;
esac

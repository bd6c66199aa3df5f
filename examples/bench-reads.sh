#!/usr/bin/env bash
# bench-reads.sh: what a read costs on a follower. Starts three servers on
# 127.0.0.61-63 (HTTP :7590, cluster :7591, DNS :7592) with the demo upstream
# on 127.0.0.1:7599, then, against one follower only:
#   lookup c16 / c1   ippool bench --mix lookup=100 (lookup hits)
#   repeat c16        ippool bench --mix repeat=100 (allocations of known domains, S7)
#   dns c20 / c1      dnsperf over 200 known names (needs Debian's dnsperf)
# and prints one line each. Extra arguments go to every `ippool serve`, so
#   examples/bench-reads.sh                        # bounded staleness (the default)
#   examples/bench-reads.sh --linearizable-reads   # a read barrier before every answer
# compare the two ways of docs' "Consistency" table. BIN=path runs another
# binary (say an older build); it must take the same flags.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
if [ -z "${BIN:-}" ]; then
	BIN=$work/ippool
	go build -o "$BIN" ./cmd/ippool
fi
go build -o "$work/upstream" ./examples/demo-upstream
"$work/upstream" 127.0.0.1:7599 & pids+=($!)
join=127.0.0.61:7591,127.0.0.62:7591,127.0.0.63:7591
"$BIN" tls init --dir "$work/tls" --servers 3 >/dev/null
for i in 1 2 3; do
	ip=127.0.0.6$i
	tls=$work/tls/server-$i
	"$BIN" serve --id "s$i" --data-dir "$work/s$i" --http-addr "$ip:7590" --cluster-addr "$ip:7591" --join "$join" \
		--tls-ca "$tls/ca.pem" --tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem" \
		--bootstrap-expect 3 --pool 100.64.0.0/16 --dns-addr "$ip:7592" --dns-domains bench.test \
		--dns-upstream 127.0.0.1:7599 --dns-rate-limit 0 --log-level error "$@" >"$work/s$i.log" 2>&1 &
	pids+=($!)
done
for _ in $(seq 150); do
	ready=0
	for i in 1 2 3; do curl -sf "127.0.0.6$i:7590/readyz" >/dev/null && ready=$((ready + 1)); done
	[ "$ready" = 3 ] && break
	sleep 0.2
done
leader=$(curl -s 127.0.0.61:7590/v1/cluster | sed -n 's/.*"leader_id": *"\([^"]*\)".*/\1/p')
f=127.0.0.61
[ "$leader" = s1 ] && f=127.0.0.62
bench() {
	"$BIN" --addr "$f:7590" bench --json --clients 10 --domains 10 --duration 6s "$@" |
		sed -n '/"total"/,/}/p' | tr -d ' \n' |
		sed 's/.*"ops_per_second":\([0-9.]*\).*"p50_ms":\([0-9.]*\).*"p99_ms":\([0-9.]*\).*/\1\/s p50 \2 ms p99 \3 ms/'
	echo
}
echo "follower $f; server flags: ${*:-(defaults)}"
echo "lookup c16: $(bench --mix lookup=100 --concurrency 16)"
echo "lookup c1:  $(bench --mix lookup=100 --concurrency 1)"
echo "repeat c16: $(bench --mix repeat=100 --concurrency 16)"
if command -v dnsperf >/dev/null; then
	for n in $(seq 0 199); do echo "n$n.bench.test A"; done >"$work/q.txt"
	dnsperf -s "$f" -p 7592 -d "$work/q.txt" -l 2 -Q 2000 >/dev/null 2>&1 # allocate them
	dns() { dnsperf -s "$f" -p 7592 -d "$work/q.txt" -l 6 "$@" 2>&1 | sed -n 's/ *Queries per second: *\([0-9.]*\)/\1 q\/s/p; s/ *Average Latency (s): *\([0-9.]*\).*/avg \1 s/p' | tr '\n' ' '; }
	echo "dns c20:    $(dns -c 20 -q 200)"
	echo "dns c1:     $(dns -c 1 -q 1)"
else
	echo "dns: dnsperf not installed (apt-get install dnsperf)"
fi

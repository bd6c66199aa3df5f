#!/usr/bin/env bash
# dns-vs-unbound.sh: ippool's DNS front end against unbound on this machine,
# side by side, in alternating runs (issue 18).
#
#   bench/dns-vs-unbound.sh [single] [follower] [new] [policy]   # default: the first three
#
# unbound (2 threads) answers 1,000 names under bench.test from local-data.
# ippool answers the same names with pool addresses, after one pass of
# dnsperf has mapped them (every query from one source):
#   single    one server
#   follower  a three-server mutual-TLS cluster, queried at a follower
# Each case runs `dnsperf -c 8 -T 1 -l $SECS` (default 10) against unbound
# and ippool in turn, $RUNS times each (default 3), and prints min / median
# / max queries per second, the mean of the runs' average latencies, each
# server's CPU time per query (from /proc, its own process only) and the
# ratios ippool/unbound.
#   new       first queries: a fresh single server, every query a name it
#             has never seen (upstream lookup and allocation through the
#             log), -n 1 over 400,000 names, $RUNS runs on fresh state.
#   policy    one server's mapped names with an empty policy against one of
#             $POLICY_RULES (default 1,000) rules that reads every index,
#             alternating on the same server, $RUNS runs each; ippool only.
# ippool runs with --dns-rate-limit 0 and --dns-new-clients-rate 0: the
# limits are per source and dnsperf is one source; a mapped name with a
# cached upstream answer takes no token anyway, but its upstream refresh
# does (one a name every --dns-cache-min-ttl), and every new name does.
#
# ippool's upstream is another unbound. Needs Debian's dnsperf and unbound (installed with apt-get when missing),
# curl and Go. Addresses 127.0.0.151-156, ports 7850-7859. BIN=path runs
# another ippool binary.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
RUNS=${RUNS:-3}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(single follower new)

missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v unbound >/dev/null || [ -x /usr/sbin/unbound ] || missing+=(unbound)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi
UNBOUND=$(command -v unbound || echo /usr/sbin/unbound)

work=$(mktemp -d)
pids=()
stop() { # stop PID...: the processes this script started, by PID
	for p in "$@"; do kill "$p" 2>/dev/null || true; done
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
trap 'stop "${pids[@]}"; rm -rf "$work"' EXIT
if [ -z "${BIN:-}" ]; then
	BIN=$work/ippool
	go build -o "$BIN" ./cmd/ippool
fi

# ippool's upstream is a second unbound (one thread) answering every name
# under bench.test with 203.0.113.1: a real resolver, as in production, and one
# that leaves more of the two CPUs to ippool than examples/demo-upstream. (Not
# 192.0.2.1: a machine whose own network that is, as one test machine's is,
# would have the resolver drop it as private, and no name would be new.)
UP=127.0.0.156:7859
UNB=127.0.0.151
cat >"$work/upstream.conf" <<EOF
server:
	interface: ${UP/:/@}
	num-threads: 1
	do-daemonize: no
	chroot: ""
	username: ""
	directory: "$work"
	pidfile: ""
	use-syslog: no
	logfile: ""
	verbosity: 0
	access-control: 127.0.0.0/8 allow
	local-zone: "bench.test." redirect
	local-data: "bench.test. 300 IN A 203.0.113.1"
remote-control:
	control-enable: no
EOF
"$UNBOUND" -d -c "$work/upstream.conf" >"$work/upstream.log" 2>&1 &
pids+=($!)

for n in $(seq 0 999); do echo "n$n.bench.test A"; done >"$work/q.txt"
{
	cat <<EOF
server:
	interface: $UNB@7853
	num-threads: 2
	so-reuseport: yes
	do-daemonize: no
	chroot: ""
	username: ""
	directory: "$work"
	pidfile: ""
	use-syslog: no
	logfile: ""
	verbosity: 0
	access-control: 127.0.0.0/8 allow
	local-zone: "bench.test." static
EOF
	for n in $(seq 0 999); do printf '\tlocal-data: "n%d.bench.test. 60 IN A 100.64.%d.%d"\n' "$n" $((n / 250)) $((n % 250 + 1)); done
	printf 'remote-control:\n\tcontrol-enable: no\n'
} >"$work/unbound.conf"
"$UNBOUND" -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
unbound_pid=$!
pids+=($unbound_pid)

POOL=100.64.0.0/16
serve_flags=(--dns-domains bench.test --dns-upstream "$UP"
	--dns-rate-limit 0 --dns-new-clients-rate 0 --log-level error)
# dnsperf is one client, which the new case gives 400,000 names: past the
# default --max-mappings-per-client. A binary from before the quotas has no
# such flag (and no such bound).
if "$BIN" serve --help 2>/dev/null | grep -q -- --max-mappings-per-client; then
	serve_flags+=(--max-mappings-per-client 0 --max-mappings 0)
fi

ready() { # ready HTTP-ADDR...
	for _ in $(seq 150); do
		local n=0
		for a in "$@"; do curl -sf "$a/readyz" >/dev/null && n=$((n + 1)); done
		[ "$n" = $# ] && return 0
		sleep 0.2
	done
	echo "servers $* not ready" >&2
	return 1
}

ippool_pids=()
start_single() { # start_single DATA-DIR; DNS on 127.0.0.152:7853
	"$BIN" serve --id s1 --data-dir "$1" --http-addr 127.0.0.152:7850 --dns-addr 127.0.0.152:7853 \
		--pool "$POOL" "${serve_flags[@]}" >"$1.log" 2>&1 &
	ippool_pids=($!)
	pids+=($!)
	ready 127.0.0.152:7850
	DNS=127.0.0.152 DNS_PID=${ippool_pids[0]}
}

start_cluster() { # three servers on 127.0.0.153-155; DNS is a follower
	"$BIN" tls init --dir "$work/tls" --servers 3 >/dev/null
	local join=127.0.0.153:7851,127.0.0.154:7851,127.0.0.155:7851
	ippool_pids=()
	for i in 1 2 3; do
		local ip=127.0.0.15$((i + 2)) tls=$work/tls/server-$i
		"$BIN" serve --id "s$i" --data-dir "$work/c$i" --http-addr "$ip:7850" --cluster-addr "$ip:7851" \
			--join "$join" --bootstrap-expect 3 --dns-addr "$ip:7853" \
			--tls-ca "$tls/ca.pem" --tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem" \
			--pool "$POOL" "${serve_flags[@]}" >"$work/c$i.log" 2>&1 &
		ippool_pids+=($!)
		pids+=($!)
	done
	ready 127.0.0.153:7850 127.0.0.154:7850 127.0.0.155:7850
	local leader
	leader=$(curl -s 127.0.0.153:7850/v1/cluster | sed -n 's/.*"leader_id": *"\([^"]*\)".*/\1/p')
	DNS=127.0.0.153 DNS_PID=${ippool_pids[0]}
	[ "$leader" = s1 ] && DNS=127.0.0.154 DNS_PID=${ippool_pids[1]}
	echo "leader $leader, querying follower $DNS"
}

# cpu PID: the CPU time (user and system) the process has used, in ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# perf ADDR PID FILE [ARGS...]: one dnsperf run against the server at ADDR,
# process PID; prints "QPS AVG-LATENCY-S CODES CPU-µs-PER-QUERY". The CPU
# figure is the server's own, which the ratio of two servers sharing the
# cores with dnsperf hides: the one that costs less leaves dnsperf more.
perf() {
	local addr=$1 pid=$2 file=$3 c0 out
	shift 3
	c0=$(cpu "$pid")
	out=$(dnsperf -s "$addr" -p 7853 -d "$file" -c 8 -T 1 "$@" 2>&1 | awk '
		/Queries completed:/ { n = $3 }
		/Queries per second:/ { q = $4 }
		/Average Latency/ { l = $4 }
		/Response codes:/ { sub(/.*Response codes: */, ""); gsub(/ /, "_"); c = $0 }
		END { print q, l, c, n }')
	awk -v c0="$c0" -v c1="$(cpu "$pid")" -v hz="$TICK" -v o="$out" \
		'BEGIN { split(o, f, " "); printf "%s %s %s %.2f\n", f[1], f[2], f[3], (f[4] > 0 ? (c1 - c0) / hz * 1e6 / f[4] : 0) }'
}

# summary NAME FILE: min/median/max of column 1, means of columns 2 and 4
summary() {
	sort -n -k1 "$2" | awk -v name="$1" '
		{ q[NR] = $1; l += $2; u += $4 }
		END { printf "%-8s q/s min %9.0f  median %9.0f  max %9.0f   avg latency %.3f ms   CPU %.2f µs/query\n", name, q[1], q[int((NR + 1) / 2)], q[NR], l / NR * 1000, u / NR }'
}

median() { sort -n -k1 "$1" | awk '{ q[NR] = $1 } END { print q[int((NR + 1) / 2)] }'; }
mean() { awk -v c="$1" '{ s += $c } END { print s / NR }' "$2"; } # mean COLUMN FILE

compare() { # compare CASE: alternating runs, unbound first
	: >"$work/unbound.runs"
	: >"$work/ippool.runs"
	for r in $(seq "$RUNS"); do
		perf "$UNB" "$unbound_pid" "$work/q.txt" -l "$SECS" | tee -a "$work/unbound.runs" | sed "s/^/  run $r unbound: /"
		perf "$DNS" "$DNS_PID" "$work/q.txt" -l "$SECS" | tee -a "$work/ippool.runs" | sed "s/^/  run $r ippool:  /"
	done
	summary unbound "$work/unbound.runs"
	summary ippool "$work/ippool.runs"
	awk -v a="$(median "$work/ippool.runs")" -v b="$(median "$work/unbound.runs")" \
		-v la="$(mean 2 "$work/ippool.runs")" -v lb="$(mean 2 "$work/unbound.runs")" \
		-v ua="$(mean 4 "$work/ippool.runs")" -v ub="$(mean 4 "$work/unbound.runs")" -v c="$1" \
		'BEGIN { printf "%s: ippool/unbound q/s %.2fx (median), avg latency %.2fx, CPU per query %.2fx\n", c, a / b, la / lb, ua / ub }'
}

# policy_doc N: a policy of N rules of several selector kinds, none of which
# matches dnsperf's client (127.0.0.1) or names before the last, which
# allows them, so that each check reads every index; the default denies.
policy_doc() {
	printf '{"rules": ['
	for i in $(seq 1 $(($1 - 1))); do
		case $((i % 4)) in
		0) printf '{"name":"r%d","clients":["id:host-%d"],"domains":["*.svc%d.example"],"action":"allow"},' "$i" "$i" "$i" ;;
		1) printf '{"name":"r%d","clients":["cidr:10.%d.%d.0/24"],"domains":["*"],"ports":["tcp:%d"],"action":"deny"},' "$i" $((i / 256)) $((i % 256)) $((1 + i % 60000)) ;;
		2) printf '{"name":"r%d","clients":["id-prefix:team%d-"],"domains":["app%d.example"],"action":"deny"},' "$i" "$i" "$i" ;;
		3) printf '{"name":"r%d","clients":["tag:t%d"],"domains":["*.bench.test"],"action":"deny"},' "$i" "$i" ;;
		esac
	done
	printf '{"name":"bench","clients":["cidr:127.0.0.0/8"],"domains":["*.bench.test"],"action":"allow"}],"default":"deny"}\n'
}

# put_policy HTTP-ADDR FILE: set the policy, or fail.
put_policy() { curl -sf -X PUT --data-binary @"$2" "http://$1/v1/policy" >/dev/null; }

map_names() { # one pass to map the 1,000 names; every answer must be NOERROR
	local out
	out=$(dnsperf -s "$DNS" -p 7853 -d "$work/q.txt" -n 1 -c 1 -q 20 2>&1)
	grep -q "NOERROR 1000 " <<<"$out" || { echo "mapping the names failed:" >&2; echo "$out" >&2; return 1; }
}

echo "$(date -u +%FT%TZ) $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg); dnsperf -c 8 -T 1 -l $SECS, $RUNS runs each"
echo "unbound $("$UNBOUND" -V | sed -n 's/^Version //p'), 2 threads, 1,000 names of local-data"
for c in "${cases[@]}"; do
	case $c in
	single)
		echo "== single server, 1,000 mapped names"
		start_single "$work/single"
		map_names
		compare single
		stop "${ippool_pids[@]}"
		;;
	follower)
		echo "== follower of a three-server cluster, 1,000 mapped names"
		start_cluster
		map_names
		compare follower
		stop "${ippool_pids[@]}"
		;;
	policy)
		rules=${POLICY_RULES:-1000}
		echo "== single server, 1,000 mapped names: an empty policy ({}) against one of $rules rules, alternating"
		start_single "$work/policy"
		map_names
		policy_doc "$rules" >"$work/policy.hujson"
		echo '{}' >"$work/empty.hujson"
		: >"$work/empty.runs"
		: >"$work/rules.runs"
		for r in $(seq "$RUNS"); do
			put_policy 127.0.0.152:7850 "$work/empty.hujson"
			perf "$DNS" "$DNS_PID" "$work/q.txt" -l "$SECS" | tee -a "$work/empty.runs" | sed "s/^/  run $r empty policy: /"
			put_policy 127.0.0.152:7850 "$work/policy.hujson"
			perf "$DNS" "$DNS_PID" "$work/q.txt" -l "$SECS" | tee -a "$work/rules.runs" | sed "s/^/  run $r $rules rules:    /"
		done
		summary empty "$work/empty.runs"
		summary rules "$work/rules.runs"
		awk -v a="$(median "$work/rules.runs")" -v b="$(median "$work/empty.runs")" \
			-v ua="$(mean 4 "$work/rules.runs")" -v ub="$(mean 4 "$work/empty.runs")" -v n="$rules" \
			'BEGIN { printf "policy: %d rules / empty q/s %.3fx (median), CPU per query %.3fx\n", n, a / b, ua / ub }'
		stop "${ippool_pids[@]}"
		;;
	new)
		echo "== new names (first query of each), fresh single server per run, -n 1 over 400,000 names"
		: >"$work/new.runs"
		POOL=100.64.0.0/12 # every name is the one client's
		for r in $(seq "$RUNS"); do
			seq 0 399999 | sed "s/.*/r${r}x&.bench.test A/" >"$work/new.txt"
			rm -rf "$work/new"
			start_single "$work/new"
			perf "$DNS" "$DNS_PID" "$work/new.txt" -n 1 -l "$SECS" | tee -a "$work/new.runs" | sed "s/^/  run $r ippool: /"
			stop "${ippool_pids[@]}"
		done
		summary new "$work/new.runs"
		;;
	*)
		echo "unknown case $c (single, follower, new, policy)" >&2
		exit 2
		;;
	esac
done

#!/usr/bin/env bash
# connector-demo.sh: a client, a gateway running `ippool serve --connector`
# and an "internet", each in a network namespace of its own, then dig and curl
# from the client: the client's resolver is ippool, which answers with a pool
# address; curl to that address reaches the domain's real server through the
# connector. Needs root (namespaces, nftables), go, ip, dig and curl, and no
# network: every address is inside the namespaces it makes (10.250.x and the
# pool). It removes everything it made when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "connector-demo.sh: run as root (it makes network namespaces)" >&2; exit 1; }

tag=ippd$$ # unique names, so two runs do not meet
client=${tag}c gw=${tag}g up=${tag}u
work=$(mktemp -d)
pids=()
cleanup() {
	kill "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
	for ns in "$client" "$gw" "$up"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "/etc/netns/$client" "$work"
}
trap cleanup EXIT

go build -o "$work/ippool" ./cmd/ippool
go build -o "$work/connector-upstream" ./examples/connector-upstream

for ns in "$client" "$gw" "$up"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
# client 10.250.1.2 -- 10.250.1.1 gateway 10.250.2.1 -- 10.250.2.2 upstream
ip link add c0 netns "$client" type veth peer name g0 netns "$gw"
ip link add g1 netns "$gw" type veth peer name u0 netns "$up"
ip -n "$client" addr add 10.250.1.2/24 dev c0
ip -n "$gw" addr add 10.250.1.1/24 dev g0
ip -n "$gw" addr add 10.250.2.1/24 dev g1
ip -n "$up" addr add 10.250.2.2/24 dev u0
ip -n "$client" link set c0 up
ip -n "$gw" link set g0 up
ip -n "$gw" link set g1 up
ip -n "$up" link set u0 up
ip -n "$client" route add default via 10.250.1.1 # pool addresses go to the gateway
mkdir -p "/etc/netns/$client"                      # ip netns exec mounts it on /etc/resolv.conf
echo "nameserver 10.250.1.1" >"/etc/netns/$client/resolv.conf"

ip netns exec "$up" "$work/connector-upstream" -dns 10.250.2.2:53 -http 10.250.2.2:80 \
	app.demo=10.250.2.2 api.demo=10.250.2.2 2>"$work/upstream.log" &
pids+=($!)
# The demo's names point into a private network, which the resolver allows
# only for names under --dns-private-domains.
ip netns exec "$gw" "$work/ippool" serve --data-dir "$work/data" \
	--dns-addr 10.250.1.1:53 --dns-domains demo --dns-upstream 10.250.2.2:53 \
	--connector --connector-allow 10.250.2.0/24 --log-level debug 2>"$work/gateway.log" &
pid=$!
pids+=("$pid")
until ip netns exec "$gw" nft list set inet ippool pool4 2>/dev/null | grep -q 198.18.0.0/15; do
	kill -0 "$pid" 2>/dev/null || { grep -v level=DEBUG "$work/gateway.log"; exit 1; }
	sleep 0.2
done

run() { echo "\$ $*"; "$@" || true; }
inclient() { ip netns exec "$client" "$@"; }
echo "# the gateway's rules, installed by ippool itself:"
run ip netns exec "$gw" nft list table inet ippool
run ip -n "$gw" rule show fwmark 0x1b1
echo
echo "# in the client namespace, whose resolver is ippool:"
echo "\$ dig +short app.demo"
inclient dig +short app.demo
echo "\$ curl -s http://app.demo/"
inclient curl -s --max-time 5 http://app.demo/
echo "\$ dig +short api.demo; curl -s http://api.demo/"
inclient dig +short api.demo
inclient curl -s --max-time 5 http://api.demo/
echo "\$ curl -sS http://198.18.0.99/   # a pool address this client was never given"
inclient curl -sS --max-time 5 http://198.18.0.99/ 2>&1 || true
echo
echo "# on the gateway:"
run ip netns exec "$gw" "$work/ippool" list 10.250.1.2
ip netns exec "$gw" curl -s localhost:7480/metrics | grep '^ippool_connector_flows_total' | grep -v ' 0$'
echo
echo "# the gateway's log, one line per flow:"
grep 'msg=flow' "$work/gateway.log" | sed 's/^time=[^ ]* level=DEBUG //'

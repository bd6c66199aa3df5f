#!/usr/bin/env bash
# dns-demo.sh: run one ippool server with its DNS front end on 127.0.0.1:5353,
# ask it a few questions with dig, show the mappings with curl, then stop it.
# Needs go, dig and curl, and no network: the upstream resolver is
# examples/demo-upstream on 127.0.0.1:5354, which knows example.com,
# www.example.org and a few more. Set UPSTREAM=host:port to use a real one
# instead. DNS_PORT, HTTP_PORT, CLUSTER_PORT and UPSTREAM_PORT move the
# servers off 5353, 7480, 7481 and 5354.
set -euo pipefail
cd "$(dirname "$0")/.."

DNS_PORT=${DNS_PORT:-5353}
HTTP=127.0.0.1:${HTTP_PORT:-7480}
work=$(mktemp -d)

go build -o "$work/ippool" ./cmd/ippool
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
if [ -z "${UPSTREAM:-}" ]; then
	go build -o "$work/demo-upstream" ./examples/demo-upstream
	UPSTREAM=127.0.0.1:${UPSTREAM_PORT:-5354}
	"$work/demo-upstream" "$UPSTREAM" 2>"$work/upstream.log" &
	pids+=($!)
fi
"$work/ippool" serve --data-dir "$work/data" --http-addr "$HTTP" --cluster-addr "127.0.0.1:${CLUSTER_PORT:-7481}" \
	--pool 100.64.0.0/24 --dns-addr "127.0.0.1:$DNS_PORT" --dns-domains example.com,example.org \
	--v6-prefix fd7a:115c:a1e0:b1a::/96 --dns-upstream "$UPSTREAM" 2>"$work/server.log" &
pid=$!
pids+=("$pid")

dig() { command dig @127.0.0.1 -p "$DNS_PORT" +time=2 +tries=1 "$@"; }
# Up once it serves writes (/readyz) and DNS answers.
until curl -sf "http://$HTTP/readyz" >/dev/null && dig SOA example.com >/dev/null 2>&1; do
	kill -0 "$pid" 2>/dev/null || { grep -v level=DEBUG "$work/server.log"; exit 1; }
	sleep 0.2
done

ask() { # ask TYPE NAME: print the answer, or the status when there is none
	echo "\$ dig @127.0.0.1 -p $DNS_PORT +short $1 $2"
	out=$(dig +short "$1" "$2")
	echo "${out:-($(dig "$1" "$2" | grep -o 'status: [A-Z]*'))}"
}
ask A example.com        # a pool address
ask A example.com        # the same one again
ask A www.example.org    # another name, another address
ask AAAA example.com     # the pool address inside the /96
ask A nosuch.example.com # NXDOMAIN upstream stays NXDOMAIN
ask A example.net        # outside --dns-domains: REFUSED

echo "\$ curl http://$HTTP/v1/clients/127.0.0.1"
curl -s "http://$HTTP/v1/clients/127.0.0.1"
echo

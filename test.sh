#!/usr/bin/env bash
# Runs every test of ippool. Installs what the tests need beyond Go when it is
# missing and this is a Debian machine we may install on: dig (dnsutils) for
# the DNS end-to-end tests, iptables for the partition faults, ps (procps)
# for examples/cluster.sh, ip (iproute2) and nft (nftables) for the
# connector's namespaces, chromium for the web console's browser tests. Tests
# that need them fail with a clear message otherwise (the browser tests skip
# instead, unless CI=true).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ps >/dev/null 2>&1 || missing+=(procps) # examples/cluster.sh
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium) # internal/e2e's console tests
command -v ip >/dev/null 2>&1 || missing+=(iproute2)  # the connector's network namespaces
command -v nft >/dev/null 2>&1 || missing+=(nftables) # the connector's tests read its table
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	echo "test.sh: installing ${missing[*]}"
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) ||
		echo "test.sh: could not install ${missing[*]}; the tests that need them will fail"
fi

# go.mod and go.sum must be what `go mod tidy` makes of them: a dependency
# added or dropped without them is caught here, not on a user's machine.
if ! go mod tidy -diff; then
	echo "go mod tidy would change go.mod or go.sum (the diff is above); run it and commit the result" >&2
	exit 1
fi
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
# The race detector runs where concurrency lives in this process: every
# package but internal/e2e and internal/faults, whose tests drive separate
# server processes.
# Every benchmark runs once, so that none can rot: a benchmark that fails
# (a pool it exhausts, a server it cannot start) fails the suite. Timed runs
# are docs/performance.md's, by hand.
go test -count=1 -run '^$' -bench . -benchtime 1x -timeout 10m "$@" ./...
inproc=$(go list ./... | grep -v -e /internal/e2e -e /internal/faults)
go test -race -count=1 -timeout 10m "$@" $inproc
go test -count=1 -timeout 10m "$@" ./internal/e2e ./internal/faults
# And in those server processes: both once more against a server built
# with the race detector (IPPOOL_TEST_RACE), which ends at its first race
# (GORACE halt_on_error) and so fails the test that met it. It found races
# no in-process test could, between fasthttp and net/http.
IPPOOL_TEST_RACE=1 GORACE=halt_on_error=1 go test -count=1 -timeout 15m "$@" ./internal/e2e ./internal/faults

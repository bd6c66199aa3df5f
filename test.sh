#!/usr/bin/env bash
# Runs every test of ippool. Installs what the tests need beyond Go (dig from
# Debian's dnsutils) when it is missing and this is a Debian machine we may
# install on; tests that need it fail with a clear message otherwise.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v dig >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	echo "test.sh: installing dnsutils (dig)"
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsutils >/dev/null) ||
		echo "test.sh: could not install dnsutils; the dig test will fail"
fi

go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go test -race -count=1 -timeout 12m "$@" ./...

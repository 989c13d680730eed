#!/usr/bin/env bash
# cmd/keypool's part of CI.
#
# To merge: paste the block between the markers into .ci/run just before
#   say "tests (the README's test command)"
# The `go test -race -count=1 ./...` there then runs TestNodeClient, which
# KEYPOOL_REQUIRE_NODE=1 makes fail, rather than skip, if node or the
# openai package is missing.
#
# Run alone (bash cmd/keypool/ci-snippet.sh), it does the same set-up and
# runs the command's tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
type say >/dev/null 2>&1 || say() { printf '\n=== %s\n' "$*"; }

# >>> cmd/keypool: the official openai Node client against the proxy
say "node and the openai package for cmd/keypool's client test"
command -v node >/dev/null 2>&1 || { echo "FATAL: node is not installed (cmd/keypool's client test needs Node >= 20)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "FATAL: npm is not installed (cmd/keypool's client test needs it)" >&2; exit 1; }
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' ||
  { echo "FATAL: node $(node --version) is too old; cmd/keypool's client test needs Node >= 20" >&2; exit 1; }
echo "node $(node --version), npm $(npm --version)"
(cd cmd/keypool/nodetest && npm ci --no-audit --no-fund)
export KEYPOOL_REQUIRE_NODE=1
# <<< cmd/keypool

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  say "cmd/keypool tests"
  go test -race -count=1 ./cmd/keypool/...
fi

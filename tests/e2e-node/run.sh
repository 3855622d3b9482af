#!/usr/bin/env bash
# End-to-end on a real Kubernetes node on this machine, without Docker (tests/node.rs):
#
#   tests/e2e-node/run.sh
#
# Starts scripts/node (control plane, containerd, kubelet, kube-proxy in a private
# namespace), builds the image from the Dockerfile with scripts/image and imports it
# into the node, starts a test bed inside the namespace on the node's IP (the managed
# Redis, Kafka and PostgreSQL of docs/install.md), runs tests/node.rs inside the
# namespace, then tests/node_uninstall.rs (helm upgrade, a campaign deleted, helm
# uninstall), and stops the node — whose `down` checks the host is as before — and
# deletes its state (`clean`; after a failed step it keeps it, logs included, for a look).
# Prints each step's duration. KEEP_NODE=1 leaves the node running for a look around
# (scripts/node exec kubectl get pods -A), to be stopped with scripts/node clean.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${FIRSTCOME_CACHE:-${HOME:-/root}/.cache/firstcome}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
# shellcheck source=tests/e2e-node/steps.sh
source tests/e2e-node/steps.sh

node_was_running=false
scripts/node status >/dev/null 2>&1 && node_was_running=true
stop_node() { # stop_node down|clean
    if [ "$node_was_running" = false ] && [ "${KEEP_NODE:-0}" != 1 ]; then
        scripts/node "$1"
    fi
}
trap 'stop_node down' EXIT

archive=
build_image() { archive=$(scripts/image build); }
testbed_env=
start_testbed() { testbed_env=$(scripts/node testbed); }
build_tests() { cargo test -p firstcome-e2e --test node --test node_uninstall --locked --no-run; }
# FIRSTCOME_NODE_TEST_LOG: a file the test runner's output is appended to (scripts/test
# sums its totals with the other tests').
run_test() { # run_test FILE: one test file inside the node's namespace, one test at a time
    local image
    image=$(scripts/image name)
    # shellcheck disable=SC2046 # the test bed's export lines, one variable each
    scripts/node exec env $(sed -n 's/^export //p' <<<"$testbed_env") FIRSTCOME_IMAGE="$image" \
        CARGO_TARGET_DIR="$CARGO_TARGET_DIR" \
        cargo test -p firstcome-e2e --test "$1" --locked --offline -- --ignored --nocapture --test-threads=1 \
        2>&1 | tee -a "${FIRSTCOME_NODE_TEST_LOG:-/dev/null}"
}

# The image first: the node would idle through its build.
step "image build" build_image
step "node up" scripts/node up >/dev/null
step "node smoke" scripts/node smoke
step "image import" scripts/node import "$archive"
step "test bed on the node" start_testbed
step "build the node tests" build_tests
# The scenarios, then what ends the release (upgrade, delete, uninstall): last by
# construction, as a second test file run only after the first passed.
step "tests/node.rs" run_test node
step "tests/node_uninstall.rs" run_test node_uninstall
step "node down (+ host check)" stop_node clean
trap - EXIT

print_steps "e2e on node"

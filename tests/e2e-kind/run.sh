#!/usr/bin/env bash
# End-to-end on a kind cluster, for the users' own CI: the same scenarios and
# assertions as the project's own node (tests/node.rs, then tests/node_uninstall.rs:
# one definition), with Docker and kind standing in for scripts/node. Needs docker,
# kind, kubectl, helm, cargo, sudo (two host routes) and what scripts/testbed installs.
#
#   tests/e2e-kind/run.sh
#
# UNVERIFIED: the project's machines have no Docker engine, so this path has never run
# (docs/testing.md says what is and is not known). What it gives the tests, where
# scripts/node's private namespace gives them the same:
#   - a kind cluster (Service range SERVICE_CIDR, fixed in its config), KUBECONFIG its own;
#   - the image from the Dockerfile (`docker build`, `kind load`), named by FIRSTCOME_IMAGE;
#   - the test bed (scripts/testbed: Redis, PostgreSQL, Kafka, the managed services of
#     docs/install.md) on the kind network's gateway, the host address pods reach;
#   - on the host, the ClusterIPs routed via the kind node (its kube-proxy answers them)
#     and the spike's client addresses (FIRSTCOME_E2E_CROWD) local on lo;
# then builds and runs the two test files as tests/e2e-node/run.sh does, printing each
# step's duration, and undoes it all at exit (KEEP_CLUSTER=1 keeps the cluster and the
# test bed; the routes always go).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-firstcome-e2e}
SERVICE_CIDR=10.96.0.0/16
CROWD=10.250.1
IMAGE=firstcome:e2e
STATE=${TMPDIR:-/tmp}/firstcome-kind
export KUBECONFIG="$STATE/kubeconfig"

for tool in docker kind kubectl helm cargo sudo ip; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
mkdir -p "$STATE"

# shellcheck source=tests/e2e-node/steps.sh
source tests/e2e-node/steps.sh

routes=()
route() { # route ARGS...: `ip route replace ARGS` on the host, deleted at exit
    sudo ip route replace "$@"
    routes+=("$*")
}
cleanup() {
    local r args
    for r in "${routes[@]}"; do
        read -ra args <<<"$r"
        sudo ip route del "${args[@]}" || true
    done
    if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
        FIRSTCOME_TESTBED_DIR="$STATE/testbed" scripts/testbed down || true
        kind delete cluster --name "$CLUSTER"
    fi
}
trap cleanup EXIT

create_cluster() {
    kind create cluster --name "$CLUSTER" --wait 120s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  serviceSubnet: $SERVICE_CIDR
EOF
}
build_image() {
    docker build -t "$IMAGE" .
    kind load docker-image "$IMAGE" --name "$CLUSTER"
}
host_routes() {
    local node_ip
    node_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
        "$CLUSTER-control-plane")
    route "$SERVICE_CIDR" via "$node_ip"
    route local "$CROWD.0/24" dev lo
}
testbed_env=
start_testbed() {
    local gateway
    gateway=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' |
        tr ' ' '\n' | grep -m1 '\.')
    testbed_env=$(FIRSTCOME_TESTBED_HOST="$gateway" FIRSTCOME_TESTBED_DIR="$STATE/testbed" \
        scripts/testbed up)
}
build_tests() { cargo test -p firstcome-e2e --test node --test node_uninstall --locked --no-run; }
run_test() { # run_test FILE: one test file, one test at a time, as on the node
    # shellcheck disable=SC2046 # the test bed's export lines, one variable each
    env $(sed -n 's/^export //p' <<<"$testbed_env") FIRSTCOME_IMAGE="$IMAGE" \
        FIRSTCOME_E2E_CROWD="$CROWD" \
        cargo test -p firstcome-e2e --test "$1" --locked -- --ignored --nocapture --test-threads=1
}

step "kind cluster" create_cluster
step "image build + kind load" build_image
step "host routes" host_routes
step "test bed on the gateway" start_testbed
step "build the node tests" build_tests
step "tests/node.rs" run_test node
step "tests/node_uninstall.rs" run_test node_uninstall

print_steps "e2e on kind"

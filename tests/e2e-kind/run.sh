#!/usr/bin/env bash
# End-to-end on a real cluster, for the users' own CI: needs Docker, kind, kubectl and helm
# (it cannot run on the project's own machines, which have no Docker engine).
#
#   tests/e2e-kind/run.sh
#
# Creates a kind cluster, builds the image, installs Redis, Kafka and PostgreSQL from
# the manifests beside this script, installs the chart, applies examples/campaign.yaml
# (opening now, limit 100), fires 1000 applies through the issuer Service, and asserts
# what the local e2e tests assert: 100 admitted, 900 sold out, status SoldOut with 100
# issued. Deletes the cluster at the end unless KEEP_CLUSTER=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-firstcome-e2e}
NS=shop

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
cleanup() { [ "${KEEP_CLUSTER:-0}" = 1 ] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 120s
docker build -t firstcome:e2e .
kind load docker-image firstcome:e2e --name "$CLUSTER"

kubectl create namespace "$NS"
kubectl -n "$NS" apply -f tests/e2e-kind/backends.yaml
kubectl -n "$NS" rollout status deploy/redis deploy/postgres deploy/kafka --timeout=300s

helm install firstcome charts/firstcome --namespace firstcome-system --create-namespace \
    --set image.repository=firstcome --set image.tag=e2e --set image.pullPolicy=Never --wait

# The example campaign, opening now, at a peak a kind node can schedule.
sed -e '/opensAt/d' -e '/closesAt/d' -e 's/replicationFactor: 3/replicationFactor: 1/' \
    -e 's/peakReplicas: 12/peakReplicas: 2/' examples/campaign.yaml \
    | kubectl -n "$NS" apply -f -
kubectl -n "$NS" wait couponcampaign/black-friday --for=jsonpath='{.status.phase}'=Open --timeout=300s
kubectl -n "$NS" rollout status deploy/black-friday-issuer --timeout=300s

# 1000 users, 32 at a time, from inside the cluster.
kubectl -n "$NS" run spike --image=curlimages/curl --restart=Never --command -- sh -c '
  seq 1 1000 | xargs -P 32 -I{} curl -s -o /dev/null -w "%{http_code}\n" -X POST \
    -H "content-type: application/json" -d "{\"userId\":\"u{}\"}" \
    http://black-friday-issuer/v1/campaigns/'"$NS"'.black-friday/applications | sort | uniq -c'
kubectl -n "$NS" wait pod/spike --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s
counts=$(kubectl -n "$NS" logs spike)
echo "$counts"
grep -q " 100 201" <<<"$counts" || { echo "expected 100 admitted" >&2; exit 1; }
grep -q " 900 410" <<<"$counts" || { echo "expected 900 sold out" >&2; exit 1; }

kubectl -n "$NS" wait couponcampaign/black-friday --for=jsonpath='{.status.issued}'=100 --timeout=300s
kubectl -n "$NS" wait couponcampaign/black-friday --for=jsonpath='{.status.phase}'=SoldOut --timeout=60s
kubectl -n "$NS" get couponcampaigns
echo "kind e2e: 1 passed, 0 failed"

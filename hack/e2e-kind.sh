#!/usr/bin/env bash
# End to end on a real kind cluster: `make e2e` (needs Docker, kind, kubectl and helm).
#
#   1. a kind cluster, the image built (`make image`) and loaded into it
#   2. two Qdrant servers (qdrant-general, qdrant-fast) from the official Qdrant chart,
#      each with an API key; the keys also go into the Secret the DomainMap references
#   3. this chart installed (namespaced RBAC, the router serving qdrant-librarian/packages)
#   4. the demo data loaded into qdrant-general, the demo DomainMap applied
#      (hack/e2e/domainmap.yaml: analyse, then specialize: auto onto qdrant-fast)
#   5. wait: DomainMap Ready, every ClusterSpecialization Ready (real migration Jobs)
#   6. a query through the router
#   7. a RebalancePolicy (observe) reads the router's load and reports it: Ready
#
# Each step has an emulated twin that runs in `make test` without Docker:
#   image                  -> tests/packaging/test_helm.py (Dockerfile checks)
#   chart, RBAC, security  -> tests/packaging (helm lint/template, Kubernetes schemas,
#                             RBAC verbs, Pod Security "restricted")
#   DomainMap, migration   -> tests/operator (same CRDs, emulated API, Jobs played in-process)
#   router                 -> tests/integration (the router over HTTP)
#   rebalancing            -> tests/operator/test_rebalance_operator.py, the demo's step 6
#
# KEEP=1 keeps the cluster afterwards (delete it with: kind delete cluster --name librarian-e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-librarian-e2e}
IMAGE=${IMAGE:-qdrant-librarian:e2e}
NS=qdrant-librarian
KEY_GENERAL=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
KEY_FAST=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
step() { printf '\n==> %s\n' "$*"; }

step "kind cluster $CLUSTER and image $IMAGE"
kind create cluster --name "$CLUSTER"
[ "${KEEP:-0}" = 1 ] || trap 'kind delete cluster --name "$CLUSTER"' EXIT
make image IMAGE="$IMAGE"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "two Qdrant servers from the official chart"
helm repo add qdrant https://qdrant.github.io/qdrant-helm >/dev/null
helm repo update qdrant >/dev/null
for name in general fast; do
  key=$([ "$name" = general ] && echo "$KEY_GENERAL" || echo "$KEY_FAST")
  helm upgrade --install "qdrant-$name" qdrant/qdrant --namespace qdrant --create-namespace \
    --set apiKey="$key" --wait --timeout 5m
done

step "qdrant-librarian"
kubectl create namespace "$NS"
kubectl -n "$NS" create secret generic qdrant-keys \
  --from-literal=general="$KEY_GENERAL" --from-literal=fast="$KEY_FAST"
kubectl -n "$NS" label secret qdrant-keys librarian.dev/qdrant-credentials=true
ROUTER_KEY=$(openssl rand -hex 32)
export ROUTER_KEY
kubectl -n "$NS" create secret generic librarian-router-keys --from-literal=api-key="$ROUTER_KEY"
helm install librarian charts/qdrant-librarian --namespace "$NS" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set router.domainMap=packages --set 'router.credentialSecrets={qdrant-keys}' \
  --set router.auth.apiKeySecret.name=librarian-router-keys \
  --set 'operator.insecureHosts={qdrant-general.qdrant.svc,qdrant-fast.qdrant.svc}'
kubectl -n "$NS" rollout status deployment/librarian-qdrant-librarian --timeout=180s

step "demo data into qdrant-general, then the demo DomainMap"
kubectl -n qdrant port-forward svc/qdrant-general 16333:6333 >/dev/null &
FORWARD=$!
sleep 3
QDRANT_API_KEY="$KEY_GENERAL" .venv/bin/python tools/load_demo_data.py http://127.0.0.1:16333 packages
kill "$FORWARD"
kubectl apply -f hack/e2e/domainmap.yaml

step "wait for the DomainMap and its ClusterSpecializations"
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Ready domainmap/packages --timeout=600s
kubectl -n "$NS" get domainmaps
for _ in $(seq 60); do  # specialize: auto creates them right after the analysis
  [ -n "$(kubectl -n "$NS" get clusterspecializations -o name)" ] && break
  sleep 1
done
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Ready clusterspecializations --all --timeout=900s
kubectl -n "$NS" get clusterspecializations
kubectl -n "$NS" get jobs

step "a query through the router"
kubectl -n "$NS" rollout status deployment/librarian-qdrant-librarian-router --timeout=300s
kubectl -n "$NS" port-forward svc/librarian-qdrant-librarian-router 16334:6333 >/dev/null &
FORWARD=$!
sleep 3
.venv/bin/python - <<'PY'
import os

from qdrant_client import QdrantClient

from librarian.demo.data import load_demo_data

data = load_demo_data(limit=1)
router = QdrantClient(url="http://127.0.0.1:16334", api_key=os.environ["ROUTER_KEY"])
hits = router.query_points(
    "packages", query=data.vectors[0].tolist(), limit=3, with_payload=True
).points
assert hits, "the router returned no hit"
for hit in hits:
    print(f"{hit.score:.3f}  {hit.payload['text'][:70]}")
PY
kill "$FORWARD"

step "a RebalancePolicy reads the router's load"
kubectl apply -f hack/e2e/rebalancepolicy.yaml
kubectl -n "$NS" wait --for=condition=Ready rebalancepolicy/packages --timeout=300s
kubectl -n "$NS" get rebalancepolicies -o wide
step "e2e passed"

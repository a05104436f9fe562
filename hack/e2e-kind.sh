#!/usr/bin/env bash
# End to end on a real kind cluster (needs Docker, kind, kubectl and helm).
# Each step is mirrored by an emulated test that runs in `make test`:
#   build + load image      -> tests/packaging (Dockerfile checks)
#   helm install            -> tests/packaging/test_helm.py (lint, template, schema)
#   apply the example       -> tests/operator/test_demo.py (same manifest, emulated API)
#   wait for Ready          -> tests/operator/test_domainmap_operator.py
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-librarian-e2e}
IMAGE=qdrant-librarian:e2e

kind create cluster --name "$CLUSTER"
trap 'kind delete cluster --name "$CLUSTER"' EXIT
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
helm install librarian charts/qdrant-librarian --namespace qdrant-librarian --create-namespace \
  --set image.repository=qdrant-librarian --set image.tag=e2e --set image.pullPolicy=Never \
  --set embedded.enabled=true --wait
# The example's embedded path is relative to the operator's working directory (/tmp).
kubectl apply -f manifests/examples/domainmap.yaml
echo "The example DomainMap needs its source collection loaded into the embedded cluster;"
echo "with a remote Qdrant, point spec.clusters at it and create the API-key Secret."
kubectl wait --for=jsonpath='{.status.observedGeneration}'=1 domainmap/packages --timeout=300s
kubectl get domainmaps -A

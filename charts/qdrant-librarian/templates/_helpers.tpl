{{- define "librarian.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "librarian.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "librarian.labels" -}}
app.kubernetes.io/name: {{ include "librarian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "librarian.selectorLabels" -}}
app.kubernetes.io/name: {{ include "librarian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "librarian.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "librarian.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "librarian.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "librarian.routerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "librarian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "librarian.routerServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-router" (include "librarian.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches (JSON list); empty when it watches the whole cluster. */}}
{{- define "librarian.watchNamespaces" -}}
{{- if and .Values.rbac.clusterWide .Values.operator.watchNamespaces -}}
{{- fail "operator.watchNamespaces and rbac.clusterWide=true exclude each other: a cluster-wide operator watches every namespace" -}}
{{- end -}}
{{- if .Values.rbac.clusterWide -}}
{{- list | toJson -}}
{{- else -}}
{{- (default (list .Release.Namespace) .Values.operator.watchNamespaces) | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{- define "librarian.peeringName" -}}
{{- default (include "librarian.fullname" .) .Values.operator.peeringName -}}
{{- end -}}

{{/*
The router's (first) DomainMap as NAMESPACE/NAME (a bare NAME is in the release namespace);
with router.allDomainMaps, router.domainMap.
*/}}
{{- define "librarian.routerDomainMap" -}}
{{- $listed := include "librarian.routerDomainMaps" . | fromJsonArray -}}
{{- if $listed -}}
{{- first $listed -}}
{{- else if contains "/" .Values.router.domainMap -}}
{{- .Values.router.domainMap -}}
{{- else -}}
{{- printf "%s/%s" .Release.Namespace .Values.router.domainMap -}}
{{- end -}}
{{- end -}}

{{/*
The DomainMaps the router serves, as a JSON list of NAMESPACE/NAME: router.domainMaps when
set, else router.domainMap (empty with router.allDomainMaps).
*/}}
{{- define "librarian.routerDomainMaps" -}}
{{- $names := list -}}
{{- if not .Values.router.allDomainMaps -}}
{{- range (default (list .Values.router.domainMap) .Values.router.domainMaps) -}}
{{- $names = append $names (ternary . (printf "%s/%s" $.Release.Namespace .) (contains "/" .)) -}}
{{- end -}}
{{- end -}}
{{- $names | uniq | toJson -}}
{{- end -}}

{{/* The namespace whose every DomainMap the router serves (router.allDomainMaps). */}}
{{- define "librarian.routerAllDomainMapsNamespace" -}}
{{- default .Release.Namespace .Values.router.allDomainMapsNamespace -}}
{{- end -}}

{{/* The namespaces the router reads DomainMaps, ClusterSpecializations and Secrets in (JSON). */}}
{{- define "librarian.routerNamespaces" -}}
{{- if .Values.router.allDomainMaps -}}
{{- list (include "librarian.routerAllDomainMapsNamespace" .) | toJson -}}
{{- else -}}
{{- $namespaces := list -}}
{{- range (include "librarian.routerDomainMaps" . | fromJsonArray) -}}
{{- $namespaces = append $namespaces (splitList "/" . | first) -}}
{{- end -}}
{{- $namespaces | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does with the Kubernetes API, verb by verb (tests/packaging/rbac_calls.py
holds the same table, and an operator test checks the calls it really makes against it).
*/}}
{{- define "librarian.operatorRules" -}}
# kopf lists, watches and patches (progress annotations, finalizer) our resources; the
# operator reads a DomainMap's live status, a ClusterSpecialization's DomainMap and a
# RebalancePolicy (get), and removes a handled librarian.dev/rebalance annotation.
# Never spec, never update.
- apiGroups: [librarian.dev]
  resources: [domainmaps, rebalancepolicies]
  verbs: [get, list, watch, patch]
# ClusterSpecializations are created for specialize: auto and for rebalancing moves; a
# move reads its own, marks the one it replaces superseded (patch), and deletes only the
# ClusterSpecializations it created (after a rollback, or once they are replaced).
- apiGroups: [librarian.dev]
  resources: [clusterspecializations]
  verbs: [get, list, watch, patch, create, delete]
- apiGroups: [librarian.dev]
  resources: [domainmaps/status, clusterspecializations/status, rebalancepolicies/status]
  verbs: [patch]
# QdrantFleets: kopf follows them (list, watch, patch for its annotations); a DomainMap's
# fleetRef is read (get); the fleet's status reports each cluster's reachability.
- apiGroups: [librarian.dev]
  resources: [qdrantfleets]
  verbs: [get, list, watch, patch]
- apiGroups: [librarian.dev]
  resources: [qdrantfleets/status]
  verbs: [patch]
# Owner references of the Jobs (and of ClusterSpecializations made by specialize: auto) set
# blockOwnerDeletion, which clusters enforcing OwnerReferencesPermissionEnforcement
# (OpenShift) allow only to whoever may update the owner's finalizers. Never called itself.
- apiGroups: [librarian.dev]
  resources: [clusterspecializations/finalizers, domainmaps/finalizers]
  verbs: [update]
# Events for every step of the work (kopf posts them).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Migration, analysis and labeling Jobs: created, then followed; owner references
# garbage-collect them; a newer spec deletes the analysis Job it replaces, a newer analysis
# an older analysis's labeling Job, and a retry the Job that failed.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create, delete]
# While a Job runs, its pods are read to say why it cannot start (ImagePullBackOff,
# Unschedulable) as the owner's Stalled condition.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# A move waits until every router replica's Lease acknowledges its phase.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [list]
# A RebalancePolicy's spec.loadSource.routerRef: the router's Service, read to check it
# exists and to take its port.
- apiGroups: [""]
  resources: [services]
  verbs: [get]
{{- end -}}

{{/* Secrets, never in a ClusterRole: only in the Roles of the namespaces it may read. */}}
{{- define "librarian.operatorSecretRules" -}}
# API keys of remote Qdrant clusters (apiKeySecretRef), by name, in this namespace only;
# the operator uses a Secret only when it is labelled librarian.dev/qdrant-credentials.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}

{{/* The namespaces whose Secrets a cluster-wide operator may read (JSON list). */}}
{{- define "librarian.secretNamespaces" -}}
{{- (default (list .Release.Namespace) .Values.rbac.secretNamespaces) | uniq | toJson -}}
{{- end -}}

{{- define "librarian.routerRules" -}}
{{- $namespace := .namespace -}}
{{- with .root -}}
# The router follows its DomainMaps (with router.allDomainMaps: lists and watches every one
# of the namespace) and their ClusterSpecializations, read only.
- apiGroups: [librarian.dev]
  resources: [domainmaps, clusterspecializations]
  verbs: [get, list, watch]
# The QdrantFleet a DomainMap names in spec.fleetRef (its clusters), read only.
- apiGroups: [librarian.dev]
  resources: [qdrantfleets]
  verbs: [get]
{{- $secrets := list }}
{{- range .Values.router.credentialSecrets }}
{{- if not (contains "/" .) }}
{{- $secrets = append $secrets . }}
{{- else if eq (splitList "/" . | first) $namespace }}
{{- $secrets = append $secrets (splitList "/" . | last) }}
{{- end }}
{{- end }}
{{- with ($secrets | uniq) }}
# API keys of the DomainMaps' clusters: only the Secrets named in router.credentialSecrets
# for this namespace (an empty resourceNames would mean every Secret, so no rule at all
# without names).
- apiGroups: [""]
  resources: [secrets]
  resourceNames:
    {{- toYaml . | nindent 4 }}
  verbs: [get]
{{- end }}
# Each replica's own Lease: the move phases it enforces (created, then renewed).
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, patch]
{{- end }}
{{- end -}}


{{/*
The credential rules of the operator's configuration (operator.allowedApiKeyEnv and
operator.insecureHosts), as environment for the operator and the router, which both
resolve a DomainMap's API keys. Rendered only when set, so a config file's stay in force.
*/}}
{{- define "librarian.credentialEnv" -}}
{{- with .Values.operator.allowedApiKeyEnv }}
- name: LIBRARIAN__CREDENTIALS__ALLOWED_API_KEY_ENV
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.operator.insecureHosts }}
- name: LIBRARIAN__CREDENTIALS__INSECURE_HOSTS
  value: {{ toJson . | quote }}
{{- end }}
{{- end -}}

{{/*
A pod template's metadata: the selector labels plus podLabels, and podAnnotations plus the
configuration's checksum. Call with (dict "root" $ "selector" SELECTOR_LABELS "values" .Values.X
"name" "X").
*/}}
{{- define "librarian.podMetadata" -}}
{{- $selector := .selector | fromYaml -}}
{{- range $key, $_ := .values.podLabels -}}
{{- if hasKey $selector $key -}}
{{- fail (printf "%s.podLabels may not set %s: the Deployment selects its pods by it" $.name $key) -}}
{{- end -}}
{{- end -}}
labels:
  {{- .selector | nindent 2 }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if or .root.Values.config .values.podAnnotations }}
annotations:
  {{- with .values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- if .root.Values.config }}
  checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
The operator's Job pod settings (jobs.*) as one JSON document for LIBRARIAN_JOB_POD_TEMPLATE:
an environment variable of the pod template, so changing a value rolls the operator. The
operator checks it at start (a bad key stops it with a message naming the key); what a
schema cannot say is refused here.
*/}}
{{- define "librarian.jobPodTemplate" -}}
{{- $jobs := deepCopy .Values.jobs -}}
{{- if not $jobs.imagePullSecrets -}}
{{- $_ := set $jobs "imagePullSecrets" (.Values.imagePullSecrets | default list) -}}
{{- end -}}
{{- with $jobs.caBundle -}}
{{- if and .configMap .secret -}}
{{- fail "jobs.caBundle: name a ConfigMap (configMap) or a Secret (secret) holding the CA certificates, not both" -}}
{{- end -}}
{{- end -}}
{{- $volumes := list "tmp" "librarian-ca-bundle" -}}
{{- range $jobs.extraVolumes -}}
{{- if has .name $volumes -}}
{{- fail (printf "jobs.extraVolumes: the name %q is taken (the operator's own volumes are tmp and librarian-ca-bundle, and each name appears once)" .name) -}}
{{- end -}}
{{- $volumes = append $volumes .name -}}
{{- end -}}
{{- range $jobs.extraVolumeMounts -}}
{{- if not (has .name (rest (rest $volumes))) -}}
{{- fail (printf "jobs.extraVolumeMounts: %q is not a volume of jobs.extraVolumes (add it there, or fix the name)" .name) -}}
{{- end -}}
{{- end -}}
{{- toJson $jobs -}}
{{- end -}}

{{/* The CA bundle (jobs.caBundle) for a pod: its volume, when one is named. */}}
{{- define "librarian.caBundleVolume" -}}
{{- with .Values.jobs.caBundle }}
{{- if or .configMap .secret }}
- name: librarian-ca-bundle
  {{- if .configMap }}
  configMap:
    name: {{ .configMap | quote }}
    items:
      - key: {{ .key | default "ca.crt" | quote }}
        path: ca.crt
  {{- else }}
  secret:
    secretName: {{ .secret | quote }}
    items:
      - key: {{ .key | default "ca.crt" | quote }}
        path: ca.crt
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The CA bundle's mount, read-only, at the path every pod of the product uses. */}}
{{- define "librarian.caBundleMount" -}}
{{- if or .Values.jobs.caBundle.configMap .Values.jobs.caBundle.secret }}
- name: librarian-ca-bundle
  mountPath: /etc/librarian-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* The environment naming the CA bundle to the Qdrant clients (trusted besides the public CAs). */}}
{{- define "librarian.caBundleEnv" -}}
{{- if or .Values.jobs.caBundle.configMap .Values.jobs.caBundle.secret }}
- name: LIBRARIAN_CA_BUNDLE
  value: /etc/librarian-ca/ca.crt
{{- end }}
{{- end -}}

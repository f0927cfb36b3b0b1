{{/*
The chart name, or nameOverride.
*/}}
{{- define "modelgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource-name prefix: fullnameOverride, or "<release>-<chart>" (just "<release>" when the
release name already contains the chart name). Capped at 40 characters, so that a Service name
with the longest suffix the chart adds ("-operator-metrics") stays a valid 63-character label.
*/}}
{{- define "modelgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "modelgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The image tag: image.tag, or the chart's appVersion.
*/}}
{{- define "modelgate.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The image reference; a digest, when given, pins it.
*/}}
{{- define "modelgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (include "modelgate.imageTag" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "modelgate.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Labels every object carries. Call with (dict "ctx" $ "component" "operator|gateway").
*/}}
{{- define "modelgate.labels" -}}
helm.sh/chart: {{ include "modelgate.chart" .ctx }}
{{ include "modelgate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "modelgate.imageTag" .ctx | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: modelgate
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
The immutable subset that selects a component's pods. Call with
(dict "ctx" $ "component" "operator|gateway").
*/}}
{{- define "modelgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelgate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "modelgate.operator.fullname" -}}
{{- printf "%s-operator" (include "modelgate.fullname" .) }}
{{- end }}

{{- define "modelgate.gateway.fullname" -}}
{{- printf "%s-gateway" (include "modelgate.fullname" .) }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "modelgate.operator.serviceAccountName" -}}
{{- include "modelgate.operator.fullname" . }}
{{- end }}

{{/*
The gateway's ServiceAccount.
*/}}
{{- define "modelgate.gateway.serviceAccountName" -}}
{{- include "modelgate.gateway.fullname" . }}
{{- end }}

{{/*
The namespaces the operator compiles and reads Secrets in: the release namespace, then
`tenants`, without duplicates.
*/}}
{{- define "modelgate.tenantNamespaces" -}}
{{- $namespaces := prepend .Values.tenants .Release.Namespace | uniq }}
{{- toJson $namespaces }}
{{- end }}

{{/*
The response-cache mode the gateway runs with: cache.mode, or `state` when Redis is set and
`memory` otherwise.
*/}}
{{- define "modelgate.cacheMode" -}}
{{- if .Values.cache.mode }}
{{- .Values.cache.mode }}
{{- else if .Values.state.redis.existingSecret }}
{{- "state" }}
{{- else }}
{{- "memory" }}
{{- end }}
{{- end }}

{{/*
The MODELGATE_STATE variable, from the Redis Secret, when state.redis is set. The URL may carry a
password, so it stays in the Secret and in the environment, never in the pod spec or argv (both
binaries read --state from MODELGATE_STATE).
*/}}
{{- define "modelgate.stateEnv" -}}
{{- if .Values.state.redis.existingSecret }}
- name: MODELGATE_STATE
  valueFrom:
    secretKeyRef:
      name: {{ .Values.state.redis.existingSecret }}
      key: {{ .Values.state.redis.key }}
{{- end }}
{{- end }}

{{/*
Pod-level security context shared by every pod of the chart.
*/}}
{{- define "modelgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container security context shared by every container of the chart.
*/}}
{{- define "modelgate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/*
Checks across values that the schema cannot express; fails the render with a clear message.
*/}}
{{- define "modelgate.validate" -}}
{{- if and (eq .Values.cache.mode "state") (not .Values.state.redis.existingSecret) }}
{{- fail "cache.mode=state needs state.redis.existingSecret (the Redis the cache would live in); use memory or off without Redis" }}
{{- end }}
{{- $as := .Values.gateway.autoscaling }}
{{- if and $as.enabled (gt (int $as.minReplicas) (int $as.maxReplicas)) }}
{{- fail (printf "gateway.autoscaling.minReplicas (%d) must not exceed gateway.autoscaling.maxReplicas (%d)" (int $as.minReplicas) (int $as.maxReplicas)) }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.networkPolicy.restrictEgress (not .Values.networkPolicy.egressTo) }}
{{- fail "networkPolicy.restrictEgress needs networkPolicy.egressTo: at least the Kubernetes API server (both workloads watch it), plus Redis and the providers the gateway calls" }}
{{- end }}
{{- end }}

{{/*
The egress rules of the NetworkPolicies, when networkPolicy.restrictEgress is set: DNS, then
networkPolicy.egressTo.
*/}}
{{- define "modelgate.networkPolicy.egress" -}}
{{- if .Values.networkPolicy.restrictEgress }}
egress:
  # DNS, wherever the cluster resolver lives (a Service, or node-local).
  - ports:
      - port: 53
        protocol: UDP
      - port: 53
        protocol: TCP
  {{- toYaml .Values.networkPolicy.egressTo | nindent 2 }}
{{- end }}
{{- end }}

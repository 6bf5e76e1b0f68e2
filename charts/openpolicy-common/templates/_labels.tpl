{{/*
Selector labels: only name and instance, so that a selector never changes between upgrades.
Usage: {{ include "openpolicy-common.labels.selector" . | nindent 4 }}
*/}}
{{- define "openpolicy-common.labels.selector" -}}
app.kubernetes.io/name: {{ include "openpolicy-common.names.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
Standard labels on every object: the app.kubernetes.io set, the chart and the environment.
The component is the catalog tier when the chart has one.
Usage: {{ include "openpolicy-common.labels.standard" . | nindent 4 }}
*/}}
{{- define "openpolicy-common.labels.standard" -}}
{{ include "openpolicy-common.labels.selector" . }}
app.kubernetes.io/version: {{ include "openpolicy-common.labels.version" . | quote }}
{{- if and (hasKey .Values "service") (kindIs "map" .Values.service) (.Values.service.tier) }}
app.kubernetes.io/component: {{ .Values.service.tier }}
{{- end }}
app.kubernetes.io/part-of: openpolicy
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "openpolicy-common.names.chart" . }}
{{- if .Values.environment }}
openpolicy.dev/environment: {{ .Values.environment }}
{{- end }}
{{- end -}}

{{/*
Version label: the image tag when there is one, the chart's appVersion otherwise.
Usage: {{ include "openpolicy-common.labels.version" . }}
*/}}
{{- define "openpolicy-common.labels.version" -}}
{{- $version := .Chart.AppVersion | default .Chart.Version -}}
{{- if and (hasKey .Values "image") (kindIs "map" .Values.image) (.Values.image.tag) -}}
{{- $version = .Values.image.tag -}}
{{- end -}}
{{- $version | toString | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

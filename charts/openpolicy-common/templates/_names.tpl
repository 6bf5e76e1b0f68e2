{{/*
Name of the workload: the platform service name when the chart has one (one release per
service, so callers reach it by a stable DNS name), the chart name otherwise.
Usage: {{ include "openpolicy-common.names.name" . }}
*/}}
{{- define "openpolicy-common.names.name" -}}
{{- $name := .Chart.Name -}}
{{- if and (hasKey .Values "service") (kindIs "map" .Values.service) -}}
{{- if .Values.service.name -}}{{- $name = .Values.service.name -}}{{- end -}}
{{- end -}}
{{- $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Chart label value: name-version, as Helm's own helpers write it.
Usage: {{ include "openpolicy-common.names.chart" . }}
*/}}
{{- define "openpolicy-common.names.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of a child object: the workload name plus a suffix, kept within 63 characters.
Usage: {{ include "openpolicy-common.names.suffixed" (dict "context" $ "suffix" "migration") }}
*/}}
{{- define "openpolicy-common.names.suffixed" -}}
{{- $base := include "openpolicy-common.names.name" .context -}}
{{- printf "%s-%s" ($base | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{/*
Namespace every object is written to: explicit, so that rendered manifests never fall back
to "default".
Usage: {{ include "openpolicy-common.names.namespace" . }}
*/}}
{{- define "openpolicy-common.names.namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}

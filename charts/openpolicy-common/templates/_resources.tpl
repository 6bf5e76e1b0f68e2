{{/*
Container resources: requests and limits for CPU and memory, all four required (the
namespace ResourceQuota rejects pods without them anyway; failing here says why earlier).
Usage: {{ include "openpolicy-common.resources" (dict "resources" .Values.resources "what" "resources") | nindent 12 }}
*/}}
{{- define "openpolicy-common.resources" -}}
{{- range $kind := list "requests" "limits" -}}
{{- range $res := list "cpu" "memory" -}}
{{- if not (index ($.resources) $kind | default dict | dig $res "") -}}
{{- fail (printf "%s.%s.%s is required" $.what $kind $res) -}}
{{- end -}}
{{- end -}}
{{- end -}}
requests:
  cpu: {{ .resources.requests.cpu | quote }}
  memory: {{ .resources.requests.memory | quote }}
limits:
  cpu: {{ .resources.limits.cpu | quote }}
  memory: {{ .resources.limits.memory | quote }}
{{- end -}}

{{/*
Image reference: repository:tag, or repository@digest when a digest is given (a digest
wins: it is what the registry cannot change under us).
Usage: {{ include "openpolicy-common.images.image" .Values.image }}
*/}}
{{- define "openpolicy-common.images.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}
{{- end -}}

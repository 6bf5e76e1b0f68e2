{{/*
An HTTP GET probe on the named container port.
Usage: {{ include "openpolicy-common.probes.http" (dict "probe" .Values.probes.liveness "port" "http") | nindent 12 }}
The probe dict takes path, periodSeconds, timeoutSeconds, failureThreshold and
optionally initialDelaySeconds and successThreshold.
*/}}
{{- define "openpolicy-common.probes.http" -}}
httpGet:
  path: {{ .probe.path }}
  port: {{ .port }}
  scheme: HTTP
{{- with .probe.initialDelaySeconds }}
initialDelaySeconds: {{ . }}
{{- end }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- with .probe.successThreshold }}
successThreshold: {{ . }}
{{- end }}
{{- end -}}

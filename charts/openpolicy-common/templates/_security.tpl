{{/*
Pod security context of the "restricted" Pod Security Standard: a fixed non-root user and
the runtime's default seccomp profile. Only the ids can be chosen.
Usage: {{ include "openpolicy-common.security.podSecurityContext" .Values.securityContext | nindent 6 }}
*/}}
{{- define "openpolicy-common.security.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Container security context of the "restricted" standard, with a read-only root file system.
Nothing here is configurable on purpose: every container of the platform gets it.
Usage: {{ include "openpolicy-common.security.containerSecurityContext" .Values.securityContext | nindent 12 }}
*/}}
{{- define "openpolicy-common.security.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

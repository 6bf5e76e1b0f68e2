{{/*
Namespace the baseline applies to: namespace.name, or openpolicy-<environment> (the
catalog's namespace_pattern).
*/}}
{{- define "openpolicy-platform.namespace" -}}
{{- .Values.namespace.name | default (printf "openpolicy-%s" .Values.environment) -}}
{{- end -}}

{{/*
Objects of this chart live in the target namespace, not necessarily the release's.
*/}}
{{- define "openpolicy-platform.validate" -}}
{{- if and .Values.namespace.create (eq (include "openpolicy-platform.namespace" .) .Release.Namespace) -}}
{{- fail (printf "namespace.create: Helm keeps the release in namespace %s, so it cannot also create it; install the release from another namespace (for example openpolicy-system) or set namespace.create=false" .Release.Namespace) -}}
{{- end -}}
{{- end -}}

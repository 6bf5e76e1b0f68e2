{{/*
Scheduling pieces of a pod spec: node selector, tolerations, affinity.
Usage: {{ include "openpolicy-common.pod.scheduling" .Values | nindent 6 }}
*/}}
{{- define "openpolicy-common.pod.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Spread the replicas of one workload across nodes. ScheduleAnyway by default: a spread
preference must not keep a replica from starting when nodes are few.
Usage: {{ include "openpolicy-common.pod.topologySpread" . | nindent 6 }}
*/}}
{{- define "openpolicy-common.pod.topologySpread" -}}
{{- if .Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .Values.topologySpread.maxSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ .Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "openpolicy-common.labels.selector" . | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
{{- end }}
{{- end -}}

{{/*
Writable scratch space for a read-only root file system: an emptyDir volume named tmp.
Usage: volumes: {{ include "openpolicy-common.pod.tmpVolume" .Values.tmpDir | nindent 8 }}
*/}}
{{- define "openpolicy-common.pod.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: {{ .medium | quote }}
    sizeLimit: {{ .sizeLimit }}
{{- end -}}

{{/*
The mount of that volume at /tmp.
Usage: volumeMounts: {{ include "openpolicy-common.pod.tmpMount" . | nindent 12 }}
*/}}
{{- define "openpolicy-common.pod.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
Checksum of a rendered template, for pod annotations that roll the pods when it changes.
Usage: checksum/config: {{ include "openpolicy-common.pod.checksum" (dict "context" $ "template" "/configmap.yaml") }}
*/}}
{{- define "openpolicy-common.pod.checksum" -}}
{{- include (print .context.Template.BasePath .template) .context | sha256sum -}}
{{- end -}}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "openpolicy-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "openpolicy-common.names.name" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
PriorityClass of the serving pods: explicit, or openpolicy-<tier>.
*/}}
{{- define "openpolicy-service.priorityClassName" -}}
{{- .Values.priorityClassName | default (printf "openpolicy-%s" .Values.service.tier) -}}
{{- end -}}

{{/*
Fewest replicas the release runs: the HPA's minimum when autoscaling, replicaCount otherwise.
*/}}
{{- define "openpolicy-service.minReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- .Values.autoscaling.minReplicas -}}
{{- else -}}
{{- .Values.replicaCount -}}
{{- end -}}
{{- end -}}

{{/*
Labels that tie every pod of the release (serving, scheduled, migration) to its service;
the NetworkPolicies of this chart and of its callers select on it.
*/}}
{{- define "openpolicy-service.serviceLabel" -}}
openpolicy.dev/service: {{ include "openpolicy-common.names.name" . }}
{{- end -}}

{{/*
Labels of a Job's pods: the standard labels with a name of their own, so that the Service
and the Deployment never select them.
Usage: {{ include "openpolicy-service.jobLabels" (dict "context" $ "job" "migration") }}
*/}}
{{- define "openpolicy-service.jobLabels" -}}
{{- $labels := include "openpolicy-common.labels.standard" .context | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/name" (include "openpolicy-common.names.suffixed" (dict "context" .context "suffix" .job)) -}}
{{- $_ := set $labels "app.kubernetes.io/component" .job -}}
{{- $_ := set $labels "openpolicy.dev/service" (include "openpolicy-common.names.name" .context) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/*
Non-secret environment of every container: the catalog's conventions plus .Values.config.
The chart's own keys win over config.
*/}}
{{- define "openpolicy-service.configData" -}}
{{- $port := toString .Values.service.port -}}
{{- $own := dict "SERVICE_NAME" (include "openpolicy-common.names.name" .) "SERVICE_PORT" $port "PORT" $port "ENVIRONMENT" .Values.environment -}}
{{- $data := dict -}}
{{- range $key, $value := .Values.config -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- toYaml (merge $own $data) -}}
{{- end -}}

{{/*
Secret environment: one secretKeyRef per secretEnv entry, read from existingSecret.
*/}}
{{- define "openpolicy-service.secretEnv" -}}
{{- range $name, $key := .Values.secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.existingSecret }}
      key: {{ $key }}
{{- end }}
{{- end -}}

{{/*
Checksum of the Secret the pods read: the deployer's checksum and, on a real install or
upgrade, the Secret's current data (lookup returns nothing under helm template).
*/}}
{{- define "openpolicy-service.secretChecksum" -}}
{{- $data := dict -}}
{{- if .Values.existingSecret -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace .Values.existingSecret -}}
{{- if $secret -}}{{- $data = $secret.data | default dict -}}{{- end -}}
{{- end -}}
{{- printf "%s/%s" .Values.secretChecksum (toJson $data) | sha256sum -}}
{{- end -}}

{{/*
Replicas the Deployment asks for: replicaCount without autoscaling. With it the HPA owns the
count, and the chart carries it: a first install starts at autoscaling.minReplicas, so that
Helm's wait covers the environment's minimum (left out, the Deployment starts with the API's
default of 1 until the HPA's next sync); an upgrade renders the live count unchanged, never a
clamped one: the HPA owns .spec.replicas through the scale subresource, and a server-side
apply of another value conflicts with it (the HPA itself brings the count into new bounds).
Leaving the field out on upgrades instead would make Helm drop the count it set before.
lookup returns nothing under helm template: the minimum.
*/}}
{{- define "openpolicy-service.replicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- $live := lookup "apps/v1" "Deployment" (include "openpolicy-common.names.namespace" .) (include "openpolicy-common.names.name" .) -}}
{{- if $live -}}
{{- int (dig "spec" "replicas" 1 $live) -}}
{{- else -}}
{{- .Values.autoscaling.minReplicas -}}
{{- end -}}
{{- else -}}
{{- .Values.replicaCount -}}
{{- end -}}
{{- end -}}

{{/*
Checks the schema cannot express; each failure names the value at fault.
*/}}
{{- define "openpolicy-service.validate" -}}
{{- $name := include "openpolicy-common.names.name" . -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%v) must not be greater than autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if has $name .Values.callers -}}
{{- fail (printf "callers: %s lists itself" $name) -}}
{{- end -}}
{{- range .Values.calls -}}
{{- if eq .name $name -}}
{{- fail (printf "calls: %s lists itself" $name) -}}
{{- end -}}
{{- end -}}
{{- range $cron := .Values.cronJobs -}}
{{- if gt (len (include "openpolicy-common.names.suffixed" (dict "context" $ "suffix" $cron.name))) 52 -}}
{{- fail (printf "cronJobs: name %q makes the CronJob name longer than 52 characters" $cron.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

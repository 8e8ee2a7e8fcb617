{{/* Names and labels. */}}
{{- define "waybill.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "waybill.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "waybill.meta" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "waybill.labels" -}}
{{ include "waybill.meta" . }}
app.kubernetes.io/name: {{ include "waybill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "waybill.selector" -}}
app.kubernetes.io/name: {{ include "waybill.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "waybill.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "waybill.secretName" -}}
{{- default (include "waybill.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "waybill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "waybill.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The sealing keys as environment variables: the current key (Secret key
`sealing-key`) and every previous one (`sealing-key-<id>`), each as
WAYBILL_SECRETS__KEYS__<ID>.
*/}}
{{- define "waybill.sealingKeysEnv" -}}
{{- $current := .Values.secrets.currentKeyId -}}
{{- if not (regexMatch "^[a-z0-9_]+$" $current) -}}
{{- fail (printf "secrets.currentKeyId %q: use lowercase letters, digits and _ (it names an environment variable)" $current) -}}
{{- end -}}
- name: WAYBILL_SECRETS__KEYS__{{ $current | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ include "waybill.secretName" . }}
      key: sealing-key
{{- range $id := include "waybill.previousKeyIds" . | fromJsonArray }}
- name: WAYBILL_SECRETS__KEYS__{{ $id | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ include "waybill.secretName" $ }}
      key: sealing-key-{{ $id }}
{{- end }}
{{- end -}}

{{/*
Ids of the previous sealing keys (from secrets.previousKeys, or
secrets.previousKeyIds with an existing Secret), as a JSON array.
*/}}
{{- define "waybill.previousKeyIds" -}}
{{- $ids := list -}}
{{- range $id, $_ := .Values.secrets.previousKeys -}}
{{- $ids = append $ids $id -}}
{{- end -}}
{{- range .Values.secrets.previousKeyIds -}}
{{- $ids = append $ids . -}}
{{- end -}}
{{- range $ids -}}
{{- if not (regexMatch "^[a-z0-9_]+$" .) -}}
{{- fail (printf "sealing key id %q: use lowercase letters, digits and _ (it names an environment variable)" .) -}}
{{- end -}}
{{- if eq . $.Values.secrets.currentKeyId -}}
{{- fail (printf "sealing key id %q is both current and previous" .) -}}
{{- end -}}
{{- end -}}
{{- $ids | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/*
The topics whose lag says a service is behind (a YAML list): the domain
topics for the matcher (as waybill_core::catalog::DomainTopic::CONSUMED), `deliveries` for delivery (not its retry tiers,
whose records wait on purpose). Args: dict root, service.
*/}}
{{- define "waybill.lagTopics" -}}
{{- $prefix := .root.Values.kafka.topicPrefix -}}
{{- if eq .service "matcher" -}}
{{- range list "freights" "orders" "time_slot_management" "loads_monitoring" "operational_events" }}
- {{ printf "%s%s" $prefix . | quote }}
{{- end }}
{{- else -}}
- {{ printf "%sdeliveries" $prefix | quote }}
{{- end }}
{{- end }}

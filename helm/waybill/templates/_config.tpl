{{/*
The configuration every process reads with `--config` (secrets come from the
environment). Shared by the services' ConfigMap and the topics Job's own.
*/}}
{{- define "waybill.configToml" -}}
[kafka]
brokers = {{ .Values.kafka.brokers | required "kafka.brokers is required" | quote }}
topic_prefix = {{ .Values.kafka.topicPrefix | quote }}
partitions = {{ .Values.kafka.partitions | int }}
replication_factor = {{ .Values.kafka.replicationFactor | int }}
{{- if .Values.kafka.minInsyncReplicas }}
min_insync_replicas = {{ .Values.kafka.minInsyncReplicas | int }}
{{- end }}
create_topics = {{ .Values.kafka.createTopics }}
[kafka.properties]
{{- range $k, $v := .Values.kafka.properties }}
{{ $k | quote }} = {{ $v | toString | quote }}
{{- end }}
{{- $tls := .Values.kafka.tls.enabled }}
{{- $sasl := .Values.kafka.sasl.enabled }}
{{- if or $tls $sasl }}
"security.protocol" = {{ if $sasl }}{{ if $tls }}"SASL_SSL"{{ else }}"SASL_PLAINTEXT"{{ end }}{{ else }}"SSL"{{ end }}
{{- end }}
{{- if $sasl }}
"sasl.mechanism" = {{ .Values.kafka.sasl.mechanism | quote }}
"sasl.username" = {{ .Values.kafka.sasl.username | required "kafka.sasl.username is required with kafka.sasl.enabled" | quote }}
{{- end }}
{{- if and $tls .Values.kafka.tls.caSecret }}
"ssl.ca.location" = "/etc/waybill/kafka-ca/ca.crt"
{{- end }}

[secrets]
current_key_id = {{ .Values.secrets.currentKeyId | quote }}

[url_policy]
allow_http = {{ .Values.urlPolicy.allowHttp }}
allow_private_networks = {{ .Values.urlPolicy.allowPrivateNetworks }}
allowed_ports = [{{ range $i, $p := .Values.urlPolicy.allowedPorts }}{{ if $i }}, {{ end }}{{ $p | int }}{{ end }}]

[catalog]
event_types = [
{{- range .Values.catalog.eventTypes }}
  { name = {{ .name | quote }}, topic = {{ .topic | quote }}, description = {{ .description | default "" | quote }} },
{{- end }}
]

[ingest]
listen = "0.0.0.0:{{ .Values.ingest.port }}"
admin_listen = "0.0.0.0:{{ .Values.ingest.adminPort }}"
max_event_bytes = {{ .Values.ingest.maxEventBytes | int }}
write_timeout = {{ .Values.ingest.writeTimeout | quote }}
{{- with .Values.ingest.quotas }}
[ingest.quotas]
requests_per_second = {{ .requestsPerSecond | int }}
request_burst = {{ .requestBurst | int }}
idempotency_keys = {{ .idempotencyKeys | int }}
concurrent_replays = {{ .concurrentReplays | int }}
{{- range $tenant, $q := .tenants }}
[ingest.quotas.tenants.{{ $tenant | quote }}]
{{- if hasKey $q "requestsPerSecond" }}
requests_per_second = {{ $q.requestsPerSecond | int }}
{{- end }}
{{- if hasKey $q "requestBurst" }}
request_burst = {{ $q.requestBurst | int }}
{{- end }}
{{- if hasKey $q "idempotencyKeys" }}
idempotency_keys = {{ $q.idempotencyKeys | int }}
{{- end }}
{{- if hasKey $q "concurrentReplays" }}
concurrent_replays = {{ $q.concurrentReplays | int }}
{{- end }}
{{- end }}
{{- end }}

[matcher]
listen = "0.0.0.0:{{ .Values.matcher.port }}"
group_id = {{ .Values.matcher.groupId | quote }}

[delivery]
listen = "0.0.0.0:{{ .Values.delivery.port }}"
group_id = {{ .Values.delivery.groupId | quote }}
connect_timeout = {{ .Values.delivery.connectTimeout | quote }}
request_timeout = {{ .Values.delivery.requestTimeout | quote }}
drain_timeout = {{ .Values.delivery.drainTimeout | quote }}
max_in_flight_total = {{ .Values.delivery.maxInFlightTotal | int }}
{{- end -}}

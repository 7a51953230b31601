{{/*
Names. The full name is cut at 40 characters so that "<fullname>-etcd-headless" and
the StatefulSet pods' controller-revision-hash labels stay within 63.
*/}}
{{- define "cirrus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "cirrus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cirrus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cirrus.headless" -}}
{{- printf "%s-headless" (include "cirrus.fullname" .) -}}
{{- end -}}

{{- define "cirrus.etcdName" -}}
{{- printf "%s-etcd" (include "cirrus.fullname" .) -}}
{{- end -}}

{{- define "cirrus.etcdHeadless" -}}
{{- printf "%s-etcd-headless" (include "cirrus.fullname" .) -}}
{{- end -}}

{{- define "cirrus.s3Name" -}}
{{- printf "%s-s3" (include "cirrus.fullname" .) -}}
{{- end -}}

{{- define "cirrus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cirrus.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels: common ones, and the selector labels of one component. */}}
{{- define "cirrus.labels" -}}
helm.sh/chart: {{ include "cirrus.chart" . }}
app.kubernetes.io/name: {{ include "cirrus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cirrus
{{- end -}}

{{- define "cirrus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cirrus.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cirrus.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
A humantime duration of the forms the schema allows ("30s", "2m", "1m30s", "500ms",
"1h", "7d") in whole seconds, rounded up.
*/}}
{{- define "cirrus.durationSeconds" -}}
{{- $total := 0 -}}
{{- range (regexFindAll "[0-9]+(ms|d|h|m|s)" (toString .) -1) -}}
{{- $n := regexFind "^[0-9]+" . | atoi -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- if eq $unit "d" -}}{{- $total = add $total (mul $n 86400) -}}
{{- else if eq $unit "h" -}}{{- $total = add $total (mul $n 3600) -}}
{{- else if eq $unit "m" -}}{{- $total = add $total (mul $n 60) -}}
{{- else if eq $unit "s" -}}{{- $total = add $total $n -}}
{{- else -}}{{- $total = add $total (div (add $n 999) 1000) -}}
{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* The cluster's etcd endpoints, comma-separated. */}}
{{- define "cirrus.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $eps := list -}}
{{- $name := include "cirrus.etcdName" . -}}
{{- $headless := include "cirrus.etcdHeadless" . -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "http://%s-%d.%s.%s.svc.%s:2379" $name $i $headless $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $eps -}}
{{- else -}}
{{- if not .Values.etcd.endpoints -}}
{{- fail "etcd.endpoints must list the external etcd's URLs when etcd.enabled is false (brokers on Kubernetes always run as a cluster)" -}}
{{- end -}}
{{- join "," .Values.etcd.endpoints -}}
{{- end -}}
{{- end -}}

{{/* The S3 endpoint the brokers use: the dev server's, or objectStore.endpoint. */}}
{{- define "cirrus.s3Endpoint" -}}
{{- if .Values.objectStore.devServer.enabled -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "cirrus.s3Name" .) .Release.Namespace .Values.clusterDomain (int .Values.objectStore.devServer.port) -}}
{{- else -}}
{{- .Values.objectStore.endpoint -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret with the S3 keys, or "" when the brokers use the AWS default chain. */}}
{{- define "cirrus.s3SecretName" -}}
{{- $c := .Values.objectStore.credentials -}}
{{- if $c.existingSecret -}}
{{- $c.existingSecret -}}
{{- else if or $c.accessKeyId .Values.objectStore.devServer.enabled -}}
{{- printf "%s-s3-credentials" (include "cirrus.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Environment variables carrying the S3 keys (nothing when no Secret is used). */}}
{{- define "cirrus.s3Env" -}}
{{- $secret := include "cirrus.s3SecretName" . -}}
{{- if $secret -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.objectStore.credentials.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.objectStore.credentials.secretAccessKeyKey }}
{{- end -}}
{{- end -}}

{{/* storageClassName of a volume claim: "" = cluster default (omitted), "-" = none. */}}
{{- define "cirrus.storageClass" -}}
{{- if eq . "-" -}}
storageClassName: ""
{{- else if . -}}
storageClassName: {{ . | quote }}
{{- end -}}
{{- end -}}

{{/*
Checks of combinations the schema cannot express. Included by the broker StatefulSet,
so every render runs them.
*/}}
{{- define "cirrus.validate" -}}
{{- $v := .Values -}}
{{- if and $v.autoscaling.enabled $v.autoscaling.keda.enabled -}}
{{- fail "autoscaling.enabled (HPA) and autoscaling.keda.enabled are exclusive: KEDA runs its own HPA" -}}
{{- end -}}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and (not $v.persistence.enabled) (eq $v.config.durability "local") -}}
{{- fail "config.durability=local keeps acknowledged records in each broker's WAL until they reach the bucket: it needs persistence.enabled=true (or set config.durability=object)" -}}
{{- end -}}
{{- if $v.broker.preStop.enabled -}}
{{- $needed := add (int $v.broker.preStop.drainTimeoutSeconds) (include "cirrus.durationSeconds" $v.config.shutdown_timeout | int) -}}
{{- if le (int $v.broker.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "broker.terminationGracePeriodSeconds (%d) must exceed broker.preStop.drainTimeoutSeconds + config.shutdown_timeout (%d s), or the kubelet kills the broker before it has handed over and uploaded its WAL" (int $v.broker.terminationGracePeriodSeconds) (int $needed)) -}}
{{- end -}}
{{- else -}}
{{- if le (int $v.broker.terminationGracePeriodSeconds) (include "cirrus.durationSeconds" $v.config.shutdown_timeout | int) -}}
{{- fail "broker.terminationGracePeriodSeconds must exceed config.shutdown_timeout" -}}
{{- end -}}
{{- end -}}
{{- if and $v.objectStore.credentials.accessKeyId (not $v.objectStore.credentials.secretAccessKey) -}}
{{- fail "objectStore.credentials.secretAccessKey is required with objectStore.credentials.accessKeyId" -}}
{{- end -}}
{{- if and (not $v.etcd.enabled) (not $v.etcd.endpoints) -}}
{{- fail "etcd.endpoints must list the external etcd's URLs when etcd.enabled is false (brokers on Kubernetes always run as a cluster)" -}}
{{- end -}}
{{- end -}}

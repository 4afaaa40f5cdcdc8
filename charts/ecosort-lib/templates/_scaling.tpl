{{/* HPA (autoscaling/v2) on CPU and memory for the API Deployment. */}}
{{- define "ecosort-lib.hpa" -}}
{{- if .Values.autoscaling.enabled }}
{{- $name := include "ecosort-lib.name" . -}}
{{- $a := .Values.autoscaling }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: api
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $a.targetMemoryUtilizationPercentage }}
  behavior:
    scaleDown:
      # Avoid flapping after a burst of uploads.
      stabilizationWindowSeconds: 300
{{- end }}
{{- end -}}

{{/*
KEDA ScaledObject on a worker Deployment: scales on the length of the Celery queue's Redis list,
authenticated by a TriggerAuthentication that reads the Redis password from the existing Secret.
Arguments (dict): root, worker, fullname, spec.
*/}}
{{- define "ecosort-lib.scaledObject" -}}
{{- $root := .root -}}
{{- $k := .spec.keda -}}
{{- $r := $k.redis -}}
{{- /* The queue the worker consumes (its -Q argument) must be the one KEDA measures. */ -}}
{{- $consumed := "" -}}
{{- $previous := "" -}}
{{- range .spec.command }}
{{- if or (eq $previous "-Q") (eq $previous "--queues") }}{{ $consumed = . }}
{{- else if hasPrefix "--queues=" . }}{{ $consumed = trimPrefix "--queues=" . }}
{{- else if and (hasPrefix "-Q" .) (gt (len .) 2) }}{{ $consumed = trimPrefix "-Q" . }}
{{- end }}
{{- $previous = . }}
{{- end }}
{{- if ne $consumed $r.queue }}
{{- fail (printf "workers.%s.keda.redis.queue is %q but the worker's command consumes -Q %q: KEDA would measure a list nobody fills" .worker $r.queue $consumed) }}
{{- end }}
{{- /* kombu's Redis transport puts global_keyprefix (CELERY_KEY_PREFIX) before the queue's list. */ -}}
{{- $listName := printf "%s%s" (get $root.Values.config "CELERY_KEY_PREFIX" | toString) $r.queue -}}
{{- /* With the Redis egress on an ipBlock (a managed Redis outside the cluster), an in-cluster
Service name is the dev default left in place: KEDA would poll a Redis the workers do not use. */ -}}
{{- if $root.Values.networkPolicy.enabled }}
{{- range $root.Values.networkPolicy.egress.redis.to }}
{{- if and (hasKey . "ipBlock") (regexMatch "\\.svc(\\.cluster\\.local)?:[0-9]+$" $r.address) }}
{{- fail (printf "workers.%s.keda.redis.address %q is an in-cluster Service, but networkPolicy.egress.redis allows only %s: set the address of the Redis that REDIS_URL names" $.worker $r.address .ipBlock.cidr) }}
{{- end }}
{{- end }}
{{- end }}
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: {{ .fullname }}-redis
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .worker }}
spec:
  secretTargetRef:
    - parameter: password
      name: {{ include "ecosort-lib.existingSecret" $root }}
      key: {{ $r.passwordKey }}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ .fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .worker }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .fullname }}
  minReplicaCount: {{ $k.minReplicaCount }}
  maxReplicaCount: {{ $k.maxReplicaCount }}
  pollingInterval: {{ $k.pollingInterval }}
  # KEDA's cooldownPeriod only delays scaling to zero; above minReplicaCount the HPA it creates
  # decides, so the scale-down delay goes to its behavior.
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: {{ $k.scaleDownStabilizationSeconds }}
  # While the scaler cannot read the queue (Redis unreachable from KEDA, wrong address), keep
  # the workers there are and at least this many, rather than trusting a stale count.
  fallback:
    failureThreshold: {{ $k.fallback.failureThreshold }}
    replicas: {{ $k.fallback.replicas }}
    behavior: currentReplicasIfHigher
  triggers:
    - type: redis
      # KEDA accepts a fallback only on AverageValue triggers (the redis scaler's default).
      metricType: AverageValue
      metadata:
        address: {{ $r.address | quote }}
        listName: {{ $listName | quote }}
        listLength: {{ $r.listLength | toString | quote }}
        activationListLength: {{ $r.activationListLength | toString | quote }}
        databaseIndex: {{ $r.databaseIndex | toString | quote }}
        enableTLS: {{ $r.enableTLS | toString | quote }}
      authenticationRef:
        name: {{ .fullname }}-redis
{{- end -}}

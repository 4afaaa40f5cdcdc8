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
      key: {{ $k.redis.passwordKey }}
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
  cooldownPeriod: {{ $k.cooldownPeriod }}
  triggers:
    - type: redis
      metadata:
        address: {{ $k.redis.address | quote }}
        listName: {{ $k.redis.listName | quote }}
        listLength: {{ $k.redis.listLength | toString | quote }}
        activationListLength: {{ $k.redis.activationListLength | toString | quote }}
        databaseIndex: {{ $k.redis.databaseIndex | toString | quote }}
        enableTLS: {{ $k.redis.enableTLS | toString | quote }}
      authenticationRef:
        name: {{ .fullname }}-redis
{{- end -}}

{{/*
The pod template shared by the API Deployment, worker Deployments and the migration Job.
Arguments (dict): root (the chart context), component, command, probes (YAML string or ""),
resources, ports (bool), envFromConfigMap (bool), extraEnv (list, optional), lifecycle (map,
optional).
*/}}
{{- define "ecosort-lib.podSpec" -}}
{{- $root := .root -}}
{{- with include "ecosort-lib.imagePullSecrets" $root | trim }}
{{ . }}
{{- end }}
securityContext:
  {{- include "ecosort-lib.podSecurityContext" $root | nindent 2 }}
containers:
  - name: {{ .component }}
    image: {{ include "ecosort-lib.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command:
      {{- toYaml .command | nindent 6 }}
    {{- if .ports }}
    ports:
      - name: http
        containerPort: {{ $root.Values.api.port }}
        protocol: TCP
    {{- end }}
    {{- if .envFromConfigMap }}
    envFrom:
      - configMapRef:
          name: {{ include "ecosort-lib.name" $root }}
    {{- end }}
    env:
      {{- if not .envFromConfigMap }}
      {{- include "ecosort-lib.configEnv" $root | trim | nindent 6 }}
      {{- end }}
      {{- include "ecosort-lib.secretEnv" $root | trim | nindent 6 }}
      {{- with (get . "extraEnv") }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .probes }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with (get . "lifecycle") }}
    lifecycle:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- include "ecosort-lib.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      {{- include "ecosort-lib.tmpVolumeMount" $root | nindent 6 }}
volumes:
  {{- include "ecosort-lib.tmpVolume" $root | nindent 2 }}
{{- end -}}

{{/* HTTP probes of the API: liveness /healthz (no I/O), readiness /readyz (DB + Redis), on the named port. */}}
{{- define "ecosort-lib.apiProbes" -}}
{{- $p := .Values.api.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 2
  failureThreshold: {{ $p.startupFailureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: {{ $p.readinessTimeoutSeconds }}
  failureThreshold: 3
{{- end -}}

{{- define "ecosort-lib.deployment" -}}
{{- $name := include "ecosort-lib.name" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: api
  {{- with include "ecosort-lib.checkovImageSkip" . | trim }}
  annotations:
    {{- . | nindent 4 }}
  {{- end }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.api.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
      {{- include "ecosort-lib.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: api
  template:
    metadata:
      labels:
        {{- include "ecosort-lib.labels" . | nindent 8 }}
        app.kubernetes.io/component: api
      annotations:
        # Roll the pods when the plain settings change (envFrom is read only at start).
        checksum/config: {{ toYaml .Values.config | sha256sum }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: false
      # preStop + uvicorn's graceful shutdown + a margin for the lifespan shutdown.
      terminationGracePeriodSeconds: 30
      {{- /* Only the proxies in front of the API may set the client address: uvicorn trusts
      X-Forwarded-For from these and takes the rightmost address that is not one of them. With
      "*" it took the leftmost, which any client can write. */}}
      {{- $trusted := join "," .Values.api.forwardedAllowIps }}
      {{- /* --no-access-log: the service logs each request itself, as JSON with its id. */}}
      {{- $command := list "uvicorn" (printf "ecosort_%s.main:app" $name) "--host" "0.0.0.0" "--port" (toString .Values.api.port) "--proxy-headers" "--forwarded-allow-ips" $trusted "--timeout-graceful-shutdown" "20" "--no-access-log" }}
      {{- /* The ingress controllers drop the endpoint only some time after SIGTERM has
      reached the pod: keep serving a few seconds, so that requests still routed here are not
      refused. The kubelet's sleep action needs nothing in the image. */}}
      {{- $lifecycle := dict "preStop" (dict "sleep" (dict "seconds" 5)) }}
      {{- $ctx := dict "root" . "component" "api" "command" $command "probes" (include "ecosort-lib.apiProbes" .) "resources" .Values.api.resources "ports" true "envFromConfigMap" true "lifecycle" $lifecycle }}
      {{- include "ecosort-lib.podSpec" $ctx | trim | nindent 6 }}
{{- end -}}

{{/*
Worker Deployments (Celery). No `celery inspect ping` probe: it goes through the broker and hangs
under load. Liveness is an exec probe on a heartbeat file the worker's consumer touches (contract
in docs/deploy.md): a stat() of a file in /tmp cannot hang.
*/}}
{{- define "ecosort-lib.workerProbes" -}}
{{- $check := printf "import os,sys,time; p=os.environ['WORKER_HEARTBEAT_FILE']; sys.exit(0 if os.path.exists(p) and time.time()-os.stat(p).st_mtime < %d else 1)" (int .maxAgeSeconds) -}}
startupProbe:
  exec:
    command: ["python", "-c", {{ $check | quote }}]
  periodSeconds: 5
  failureThreshold: {{ .startupFailureThreshold }}
livenessProbe:
  exec:
    command: ["python", "-c", {{ $check | quote }}]
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 3
{{- end -}}

{{- define "ecosort-lib.workers" -}}
{{- $root := . -}}
{{- $name := include "ecosort-lib.name" . -}}
{{- range $worker, $spec := .Values.workers }}
{{- $fullname := printf "%s-%s" $name $worker }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $worker }}
  annotations:
    {{- include "ecosort-lib.checkovImageSkip" $root | trim | nindent 4 }}
    checkov.io/skip2: CKV_K8S_9=a worker serves no traffic, so there is nothing for readiness to gate; liveness uses the heartbeat file
spec:
  {{- if not $spec.keda.enabled }}
  replicas: {{ $spec.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "ecosort-lib.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ $worker }}
  template:
    metadata:
      labels:
        {{- include "ecosort-lib.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $worker }}
      annotations:
        checksum/config: {{ toYaml $root.Values.config | sha256sum }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: false
      # Celery's warm shutdown finishes the running task before exiting.
      terminationGracePeriodSeconds: {{ $spec.terminationGracePeriodSeconds }}
      {{- with (get $spec "affinity") }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $probes := include "ecosort-lib.workerProbes" $spec.heartbeat }}
      {{- $env := list (dict "name" "WORKER_HEARTBEAT_FILE" "value" $spec.heartbeat.file) }}
      {{- $ctx := dict "root" $root "component" $worker "command" $spec.command "probes" $probes "resources" $spec.resources "ports" false "envFromConfigMap" true "extraEnv" $env }}
      {{- include "ecosort-lib.podSpec" $ctx | trim | nindent 6 }}
{{- if $spec.keda.enabled }}
---
{{ include "ecosort-lib.scaledObject" (dict "root" $root "worker" $worker "fullname" $fullname "spec" $spec) }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "ecosort-lib.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ecosort-lib.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: api
spec:
  type: ClusterIP
  ports:
    - name: http
      port: 80
      targetPort: http
      protocol: TCP
  selector:
    {{- include "ecosort-lib.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/component: api
{{- end -}}

{{- define "ecosort-lib.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "ecosort-lib.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
  {{- /* e.g. eks.amazonaws.com/role-arn: IRSA, the workload identity waste's S3 storage can use
  (the egress policies shut out the metadata endpoints that other credentials come from). */}}
  {{- with (get (get .Values "serviceAccount" | default dict) "annotations") }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# The services never call the Kubernetes API.
automountServiceAccountToken: false
{{- end -}}

{{- define "ecosort-lib.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "ecosort-lib.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
data:
  {{- range $key, $value := .Values.config }}
  {{ $key }}: {{ include "ecosort-lib.configValue" $value | quote }}
  {{- end }}
{{- end -}}

{{- define "ecosort-lib.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ecosort-lib.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: api
spec:
  maxUnavailable: {{ .Values.api.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "ecosort-lib.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: api
{{- end -}}

{{/*
Migrations run as a pre-install/pre-upgrade hook, before the new pods start. Hooks run before
the release's own objects exist, so the Job takes its settings inline (not from the ConfigMap)
and uses no ServiceAccount of the release (the namespace default, without a token).
*/}}
{{- define "ecosort-lib.migrationJob" -}}
{{- if .Values.migrations.enabled }}
{{- $name := include "ecosort-lib.name" . -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $name }}-migrate
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
    app.kubernetes.io/component: migrations
  annotations:
    {{- include "ecosort-lib.checkovImageSkip" . | trim | nindent 4 }}
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: {{ .Values.migrations.backoffLimit }}
  activeDeadlineSeconds: {{ .Values.migrations.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: 3600
  template:
    metadata:
      labels:
        {{- include "ecosort-lib.labels" . | nindent 8 }}
        app.kubernetes.io/component: migrations
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      {{- $command := list "python" "-m" (printf "ecosort_%s" $name) "migrate" }}
      {{- $ctx := dict "root" . "component" "migrate" "command" $command "probes" "" "resources" .Values.migrations.resources "ports" false "envFromConfigMap" false }}
      {{- include "ecosort-lib.podSpec" $ctx | trim | nindent 6 }}
{{- end }}
{{- end -}}

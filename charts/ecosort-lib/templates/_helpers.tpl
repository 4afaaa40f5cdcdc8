{{/*
Names and labels. The workload name is the chart name (auth, users, waste, recycling, locations):
the Ingress objects in ingress/ point at a Service of exactly that name, so it must not depend on
the release name.
*/}}
{{- define "ecosort-lib.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecosort-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecosort-lib.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecosort-lib.labels" -}}
{{ include "ecosort-lib.selectorLabels" . }}
app.kubernetes.io/part-of: ecosort
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The image reference: by digest when one is given (prod), else by tag (skaffold/kind). */}}
{{- define "ecosort-lib.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "ecosort-lib.existingSecret" -}}
{{- required "secrets.existingSecret is required: the name of a Secret created beforehand (see docs/deploy.md)" .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Environment read from the existing Secret, one variable per key; optional keys may be absent. */}}
{{- define "ecosort-lib.secretEnv" -}}
{{- $secret := include "ecosort-lib.existingSecret" . -}}
{{- range .Values.secrets.env }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ default .name (get . "key") }}
      {{- if get . "optional" }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}

{{/*
A plain setting as the text the service reads. Helm reads every number of a values file as a
float, which toString writes in exponent form from a million up ("1e+06", "1.234567e+06"), and the
services' integer settings (KAKAO_APP_ID, LLM_DAILY_TOKEN_BUDGET, ...) refuse that: JSON writes it
in full.
*/}}
{{- define "ecosort-lib.configValue" -}}
{{- if kindIs "float64" . -}}
{{- toJson . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* Plain settings as an env list, for pods that run before the ConfigMap exists (hooks). */}}
{{- define "ecosort-lib.configEnv" -}}
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ include "ecosort-lib.configValue" $value | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level security: non-root, fixed high uid/gid, RuntimeDefault seccomp (pod-security "restricted"). */}}
{{- define "ecosort-lib.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ecosort-lib.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The only writable path: /tmp on an emptyDir (uploads spool there; the worker's heartbeat). */}}
{{- define "ecosort-lib.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "ecosort-lib.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit | default "256Mi" }}
{{- end -}}

{{- define "ecosort-lib.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
checkov skips that hold for one object only, with their reasons (annotations on the workload).
Without image.digest the image is referenced by tag: skaffold's dev loop on kind builds unique
git-commit tags, and prod sets image.digest at deploy time (skaffold -p prod, or --set).
*/}}
{{- define "ecosort-lib.checkovImageSkip" -}}
{{- if not .Values.image.digest }}
checkov.io/skip1: CKV_K8S_43=image.digest is set at deploy time (skaffold -p prod or helm --set); dev uses unique git-commit tags on kind
{{- end }}
{{- end -}}

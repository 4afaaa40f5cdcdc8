{{/*
NetworkPolicies. The namespace itself denies all traffic (k8s/namespaces/); these allow exactly
what the design needs:
  - <name>-api-ingress: the ingress controller(s) (and callers listed in extraIngressFrom, e.g.
    every EcoSort namespace for auth's JWKS, waste for recycling) -> the API port;
  - <name>-egress (API and worker pods): DNS, PostgreSQL, Redis, the EcoSort APIs this service
    calls (auth's JWKS, waste -> recycling), where a third-party API is used HTTPS outside the
    cluster, and the rules a values file adds in egress.extra (e.g. MinIO standing in for S3 on
    kind);
  - <name>-migrations: DNS and PostgreSQL for the migration hook, itself a hook so that it exists
    before the Job runs on a first install.
*/}}
{{- define "ecosort-lib.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .dns.podLabels | nindent 10 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{- define "ecosort-lib.storeEgress" -}}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ .port }}
{{- end -}}

{{- define "ecosort-lib.networkPolicies" -}}
{{- if .Values.networkPolicy.enabled }}
{{- $name := include "ecosort-lib.name" . -}}
{{- $np := .Values.networkPolicy -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}-api-ingress
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "ecosort-lib.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: api
  policyTypes:
    - Ingress
  ingress:
    - from:
        {{- toYaml (concat $np.ingressControllers $np.extraIngressFrom $np.metricsFrom) | nindent 8 }}
      ports:
        - protocol: TCP
          port: {{ .Values.api.port }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}-egress
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
spec:
  # The long-running pods only: the migration Job gets <name>-migrations alone (policies add up).
  podSelector:
    matchLabels:
      {{- include "ecosort-lib.selectorLabels" . | nindent 6 }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values:
          - api
          {{- range $worker, $_ := .Values.workers }}
          - {{ $worker }}
          {{- end }}
  policyTypes:
    - Egress
  egress:
    {{- include "ecosort-lib.dnsEgress" $np.egress | nindent 4 }}
    {{- include "ecosort-lib.storeEgress" $np.egress.postgres | nindent 4 }}
    {{- include "ecosort-lib.storeEgress" $np.egress.redis | nindent 4 }}
    {{- range $np.egress.services }}
    # -> {{ . }} API (pod port; the Service maps 80 -> 8000)
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: ecosort-{{ . }}
          podSelector:
            matchLabels:
              app.kubernetes.io/name: {{ . }}
              app.kubernetes.io/component: api
      ports:
        - protocol: TCP
          port: 8000
    {{- end }}
    {{- if $np.egress.externalHttps.enabled }}
    # Third-party APIs (OAuth providers, OpenAI, Kakao Local, S3): HTTPS outside the cluster only.
    - to:
        - ipBlock:
            cidr: 0.0.0.0/0
            except:
              {{- toYaml $np.egress.externalHttps.exceptCidrs | nindent 14 }}
      ports:
        - protocol: TCP
          port: 443
    {{- end }}
    {{- with $np.egress.extra }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- if .Values.migrations.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name }}-migrations
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ecosort-lib.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  podSelector:
    matchLabels:
      {{- include "ecosort-lib.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: migrations
  policyTypes:
    - Egress
  egress:
    {{- include "ecosort-lib.dnsEgress" $np.egress | nindent 4 }}
    {{- include "ecosort-lib.storeEgress" $np.egress.postgres | nindent 4 }}
{{- end }}
{{- end }}
{{- end -}}

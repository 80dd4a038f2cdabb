{{- define "podwarn-agent.labels" -}}
app.kubernetes.io/component: agent
app.kubernetes.io/name: podwarn-agent
app.kubernetes.io/part-of: podwarn
{{- end }}

{{- define "podwarn-agent.rules" -}}
- apiGroups: [""]
  resources: ["events", "pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get"]
{{- if .Values.rbac.podLogs }}
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{- define "podwarn-agent.validate" -}}
{{- if not (has .Values.mode (list "deployment" "daemonset")) }}
{{- fail "mode must be deployment or daemonset" }}
{{- end }}
{{- if not (has .Values.rbac.scope (list "cluster" "namespaced")) }}
{{- fail "rbac.scope must be cluster or namespaced" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "namespaced") (empty .Values.namespaces) }}
{{- fail "rbac.scope=namespaced needs the watched namespaces in `namespaces`" }}
{{- end }}
{{- end }}

{{/* The Pod template of the Deployment and the DaemonSet. */}}
{{- define "podwarn-agent.podTemplate" -}}
metadata:
  labels:
    {{- include "podwarn-agent.labels" . | nindent 4 }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: podwarn-agent
  automountServiceAccountToken: true
  enableServiceLinks: false
  terminationGracePeriodSeconds: 30
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $shape := index .Values .Values.mode }}
  {{- with $shape.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $shape.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: agent
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["run"]
      envFrom:
        - secretRef:
            name: {{ .Values.enrollment.secretName }}
      env:
        - name: PODWARN_MODE
          value: {{ .Values.mode }}
        {{- if eq .Values.mode "daemonset" }}
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        {{- end }}
        - name: PODWARN_LEADER_ELECT
          value: {{ .Values.leaderElection.enabled | toString | quote }}
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: PODWARN_SPOOL_DIR
          value: /var/lib/podwarn-agent
        - name: PODWARN_SPOOL_MAX_BYTES
          value: {{ .Values.spool.maxBytes }}
        - name: PODWARN_LOG_FORMAT
          value: {{ .Values.logFormat }}
        {{- with .Values.namespaces }}
        - name: PODWARN_NAMESPACES
          value: {{ join "," . }}
        {{- end }}
        {{- with .Values.excludeNamespaces }}
        - name: PODWARN_EXCLUDE_NAMESPACES
          value: {{ join "," . }}
        {{- end }}
        {{- if not .Values.rbac.podLogs }}
        - name: PODWARN_NO_LOGS
          value: "true"
        {{- end }}
        {{- with .Values.collector.url }}
        - name: PODWARN_COLLECTOR
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: ops
          containerPort: {{ .Values.opsPort }}
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: ops
        periodSeconds: 10
        timeoutSeconds: 2
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: ops
        periodSeconds: 5
        timeoutSeconds: 2
        failureThreshold: 3
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - name: spool
          mountPath: /var/lib/podwarn-agent
  volumes:
    - name: spool
      emptyDir:
        sizeLimit: {{ .Values.spool.sizeLimit }}
{{- end }}

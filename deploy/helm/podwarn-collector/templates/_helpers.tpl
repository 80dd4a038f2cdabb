{{- define "podwarn-collector.labels" -}}
app.kubernetes.io/component: collector
app.kubernetes.io/name: podwarn-collector
app.kubernetes.io/part-of: podwarn
{{- end }}

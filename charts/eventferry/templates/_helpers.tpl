{{- define "eventferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eventferry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "eventferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "eventferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventferry
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator") */}}
{{- define "eventferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventferry.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "eventferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "eventferry.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "eventferry.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "eventferry.broker.serviceAccountName" -}}
{{- if .Values.broker.serviceAccount.create -}}
{{- default (printf "%s-broker" (include "eventferry.fullname" .)) .Values.broker.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.broker.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Names the operator and the data plane agree on (src/eventferry/resources/names.py). */}}
{{- define "eventferry.contractConfigMap" -}}eventferry-contract{{- end -}}
{{- define "eventferry.statusConfigMap" -}}eventferry-dataplane-status{{- end -}}
{{- define "eventferry.endpointsConfigMap" -}}eventferry-subscriber-endpoints{{- end -}}
{{- define "eventferry.backlogConfigMap" -}}eventferry-dataplane-backlog{{- end -}}
{{- define "eventferry.operatorLease" -}}eventferry-operator{{- end -}}

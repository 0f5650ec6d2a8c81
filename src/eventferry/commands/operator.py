"""``eventferry operator``: reconciles Brokers, Triggers, KafkaSources and RocketMQSources (kopf).

Every option has an environment variable, so that a Deployment can set them either way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from eventferry.commands.common import add_logging, configure_logging
from eventferry.contract.senders import AUTHORIZATION_MODES, DEFAULT_AUTHORIZATION_MODE


def _env(name: str, default: str) -> str:
    # A string default goes through the option's type at parse time: a bad variable is a usage error
    # of this command only, not of every command (all parsers are built for --help).
    return os.environ.get(f"EVENTFERRY_{name}", default)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator", help="run the operator: Brokers and Triggers into the contract ConfigMap, sources into "
                         "adapter Deployments (in-cluster service account, or KUBECONFIG)")
    parser.add_argument("--system-namespace", default=_env("SYSTEM_NAMESPACE", "eventferry-system"),
                        help="namespace of the contract ConfigMap, the data plane status, the Lease and the ingress "
                             "Service (env EVENTFERRY_SYSTEM_NAMESPACE)")
    parser.add_argument("--ingress-service", default=_env("INGRESS_SERVICE", "eventferry-broker-ingress"),
                        help="the data plane's Service, in Broker addresses (env EVENTFERRY_INGRESS_SERVICE)")
    parser.add_argument("--adapter-image", default=_env("ADAPTER_IMAGE", ""),
                        help="image of the source adapter Deployments (env EVENTFERRY_ADAPTER_IMAGE)")
    parser.add_argument("--adapter-image-pull-policy", default=_env("ADAPTER_IMAGE_PULL_POLICY", ""),
                        choices=["", "Always", "IfNotPresent", "Never"],
                        help="imagePullPolicy of the adapter pods (env EVENTFERRY_ADAPTER_IMAGE_PULL_POLICY)")
    parser.add_argument("--adapter-image-pull-secrets", default=_env("ADAPTER_IMAGE_PULL_SECRETS", ""),
                        help="comma-separated Secret names for the adapter pods' private registry "
                             "(env EVENTFERRY_ADAPTER_IMAGE_PULL_SECRETS)")
    parser.add_argument("--kafka-bootstrap-servers", default=_env("KAFKA_BOOTSTRAP_SERVERS", ""),
                        help="for Kafka-class Brokers whose config names none, comma-separated "
                             "(env EVENTFERRY_KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--metrics-host", default=_env("METRICS_HOST", "0.0.0.0"))
    parser.add_argument("--metrics-port", type=int, default=_env("METRICS_PORT", "8080"),
                        help="/metrics, /healthz and /readyz (env EVENTFERRY_METRICS_PORT)")
    parser.add_argument("--backlog-url", default=_env("BACKLOG_URL", ""),
                        help="the URL at which KEDA reaches this operator's metrics port, for the backlog of "
                             "RocketMQSources of autoscaling class keda (env EVENTFERRY_BACKLOG_URL)")
    parser.add_argument("--debounce", type=float, default=_env("DEBOUNCE", "0.3"),
                        help="seconds of quiet before the contract is compiled again after a change")
    parser.add_argument("--retry-interval", type=float, default=_env("RETRY_INTERVAL", "10"),
                        help="seconds between retries of what waits on something else (a Secret, a sink, a topic)")
    parser.add_argument("--lease-duration", type=float, default=_env("LEASE_DURATION", "15"),
                        help="seconds a standby waits before taking over from a leader that stopped renewing")
    parser.add_argument("--authentication", choices=["disabled", "required"],
                        default=_env("AUTHENTICATION", "disabled"),
                        help="required: senders to a Broker present a ServiceAccount token for its audience, and "
                             "EventPolicies say who may send (env EVENTFERRY_AUTHENTICATION; docs/security.md)")
    parser.add_argument("--default-authorization-mode", choices=list(AUTHORIZATION_MODES),
                        default=_env("DEFAULT_AUTHORIZATION_MODE", DEFAULT_AUTHORIZATION_MODE),
                        help="who may send to a Broker that no EventPolicy selects, with --authentication=required "
                             "(env EVENTFERRY_DEFAULT_AUTHORIZATION_MODE)")
    parser.add_argument("--transport-encryption", choices=["disabled", "permissive", "strict"],
                        default=_env("TRANSPORT_ENCRYPTION", "disabled"),
                        help="https addresses for Brokers: permissive adds one beside http, strict has only https "
                             "(the data plane serves HTTPS; env EVENTFERRY_TRANSPORT_ENCRYPTION; docs/security.md)")
    parser.add_argument("--ingress-ca-file", default=_env("INGRESS_CA_FILE", ""),
                        help="PEM CA certificates of the ingress certificate, shown as Brokers' address CACerts "
                             "(e.g. a cert-manager Secret's ca.crt; env EVENTFERRY_INGRESS_CA_FILE)")
    add_logging(parser)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    if args.log_level != "DEBUG":
        # kopf logs every handler's success at INFO: with a thousand Triggers, only noise.
        logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, getattr(logging, args.log_level)))
    from eventferry.controller.config import OperatorConfig
    from eventferry.controller.runner import run_operator
    from eventferry.resources.adapter import AdapterSettings

    defaults = OperatorConfig()
    try:
        ingress_ca_certs = Path(args.ingress_ca_file).read_text() if args.ingress_ca_file else None
    except OSError as error:
        print(f"error: cannot read --ingress-ca-file {args.ingress_ca_file}: {error.strerror}", file=sys.stderr)
        return 2
    config = OperatorConfig(
        system_namespace=args.system_namespace,
        ingress_service=args.ingress_service,
        adapter=AdapterSettings(
            image=args.adapter_image or defaults.adapter.image,
            image_pull_policy=args.adapter_image_pull_policy or None,
            image_pull_secrets=tuple(s.strip() for s in args.adapter_image_pull_secrets.split(",") if s.strip())),
        default_kafka_bootstrap=tuple(s.strip() for s in args.kafka_bootstrap_servers.split(",") if s.strip()),
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        backlog_url=args.backlog_url or None,
        debounce=args.debounce,
        retry_interval=args.retry_interval,
        lease_duration=args.lease_duration,
        authentication=args.authentication,
        authorization_mode=args.default_authorization_mode,
        transport_encryption=args.transport_encryption,
        ingress_ca_certs=ingress_ca_certs,
    )
    try:
        return asyncio.run(run_operator(config))
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        print(f"error: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {error.strerror}",
              file=sys.stderr)
        return 1

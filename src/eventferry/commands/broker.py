"""``eventferry broker``: the broker data plane as a component (the cluster's, or standalone)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from eventferry.commands.common import add_ingress_limits, add_logging, configure_logging, dataplane_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "broker", help="run the broker data plane, reading the routing contract from a file or a ConfigMap")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--contract-file", type=Path, help="contract JSON; re-read when it changes")
    source.add_argument("--configmap", metavar="NAMESPACE/NAME", type=_namespaced_name,
                        help="the contract ConfigMap the operator writes (eventferry-system/eventferry-contract), "
                             "watched through the API (in-cluster service account, or KUBECONFIG)")
    parser.add_argument("--status-configmap", default=None, metavar="NAME",
                        help="with --configmap: where this replica reports the contract generation it loaded, in "
                             "the same namespace (default eventferry-dataplane-status); the key is $POD_NAME")
    parser.add_argument("--report-interval", type=float, default=10.0,
                        help="with --configmap: seconds between heartbeats in the status ConfigMap")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--kafka-bootstrap-servers", default=None,
                        help="bootstrap servers for Kafka brokers whose contract names none")
    parser.add_argument("--role", choices=["all", "ingress", "dispatcher"], default="all",
                        help="split a Kafka broker for scaling: ingress replicas write, dispatcher replicas deliver")
    parser.add_argument("--service-account", default=os.environ.get("EVENTFERRY_SERVICE_ACCOUNT") or None,
                        metavar="NAMESPACE/NAME", type=_namespaced_name,
                        help="with --configmap: the ServiceAccount whose tokens this replica presents to destinations "
                             "with an audience (its own; needs create on its serviceaccounts/token)")
    parser.add_argument("--tls-cert-file", default=None,
                        help="also serve HTTPS, with this certificate (PEM; loaded again when it changes, e.g. a "
                             "cert-manager Secret volume's tls.crt)")
    parser.add_argument("--tls-key-file", default=None, help="the private key of --tls-cert-file (PEM)")
    parser.add_argument("--tls-port", type=int, default=8443, help="the HTTPS port, with --tls-cert-file")
    parser.add_argument("--tls-check-interval", type=float, default=10.0,
                        help="seconds between checks of the certificate files for a rotation (default %(default)s)")
    parser.add_argument("--https-only", action="store_true",
                        help="with --tls-cert-file: take events over HTTPS only (403 on the plain port, which keeps "
                             "serving the probes and metrics): strict transport encryption")
    add_ingress_limits(parser)
    add_logging(parser)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace) -> int:
    import ssl

    from eventferry.dataplane.contract_file import ContractFile
    from eventferry.dataplane.dataplane import DataPlane
    from eventferry.dataplane.server import Server, stop_on_signals
    from eventferry.net.tls import ServerCertificate

    if bool(args.tls_cert_file) != bool(args.tls_key_file) or (args.https_only and not args.tls_cert_file):
        print("error: --tls-cert-file and --tls-key-file go together, and --https-only needs them", file=sys.stderr)
        return 2
    try:
        tls = ServerCertificate(args.tls_cert_file, args.tls_key_file) if args.tls_cert_file else None
    except ssl.SSLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    settings = dataplane_settings(args, role=args.role)
    settings.https_only = args.https_only
    dataplane = DataPlane(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    server = Server(dataplane, args.host, args.port, tls=tls, tls_port=args.tls_port,
                    tls_check_interval=args.tls_check_interval)
    try:
        await server.start()
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port} (or --tls-port {args.tls_port}): {error.strerror}; "
              "choose another port", file=sys.stderr)
        return 1
    print(f"broker data plane listening on http://{args.host}:{server.port}", flush=True)
    if tls is not None:
        print(f"broker data plane listening on https://{args.host}:{server.tls_port}", flush=True)
    try:
        if args.configmap is not None:
            await _follow_configmap(args, dataplane, stop)
            return 0
        follower = ContractFile(args.contract_file, dataplane)
        if not await follower.load():
            print(f"error: cannot load the contract from {args.contract_file}: see the log above", file=sys.stderr)
            return 1
        await follower.follow(stop)
    finally:
        await server.stop()
    return 0


def _namespaced_name(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


async def _follow_configmap(args: argparse.Namespace, dataplane: Any, stop: asyncio.Event) -> None:
    from eventferry.dataplane.activation import BacklogReporter, SubscriberEndpointsFollower
    from eventferry.dataplane.authentication import TokenVerifier, api_server_keys
    from eventferry.dataplane.contract_configmap import ConfigMapClient, ConfigMapContract
    from eventferry.dataplane.tokens import ServiceAccountTokens
    from eventferry.net.kubeconn import ApiConnection
    from eventferry.net.secrets import api_secret_reader
    from eventferry.resources.names import DATAPLANE_STATUS_CONFIGMAP

    namespace, name = args.configmap
    client = ConfigMapClient(ApiConnection.from_environment())
    follower = ConfigMapContract(client, dataplane, namespace, name,
                                 status_name=args.status_configmap or DATAPLANE_STATUS_CONFIGMAP,
                                 report_interval=args.report_interval)
    # Autoscaled subscribers: their endpoints, as the operator says, and their Triggers' backlogs, to it.
    endpoints = SubscriberEndpointsFollower(client, dataplane, namespace)
    reporter = BacklogReporter(client, dataplane, namespace, follower.replica)
    # Senders' tokens, for Brokers that ask for them: verified with the API server's service-account keys.
    dataplane.verifier = TokenVerifier(api_server_keys(client.request))
    dataplane.read_secret = api_secret_reader(client.request)  # Kafka-class Brokers' credentials
    if args.service_account is not None:  # tokens for destinations with an audience
        dataplane.tokens = ServiceAccountTokens(client.request, *args.service_account)
    print(f"following ConfigMap {namespace}/{name}; reporting as {follower.replica}", flush=True)
    try:
        await asyncio.gather(follower.run(stop), endpoints.run(stop), reporter.run(stop),
                             dataplane.verifier.run(stop, needed=dataplane.checks_senders))
    finally:
        await client.close()

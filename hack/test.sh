#!/usr/bin/env bash
# The test command: installs the project and its test servers (cached outside the repo), then runs
# lint, type checks and every test tier against real servers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[test] creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "[test] installing eventferry with its dev extras"
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'

echo "[test] provisioning the test servers (etcd, kube-apiserver, kube-controller-manager, KEDA, helm, kubectl, Kafka, RocketMQ)"
.venv/bin/python -m tests.env provision

echo "[test] ruff"
.venv/bin/ruff check src tests benchmarks
echo "[test] mypy (strict on src/)"
.venv/bin/mypy
echo "[test] import contracts (pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports --no-cache

echo "[test] pytest"
exec .venv/bin/pytest "$@"

#!/usr/bin/env bash
# Builds the project image with buildah on a machine that reaches no container registry, and runs it
# with podman as the chart runs it (docs/image.md): the base comes from Debian packages
# (mmdebstrap), the Dockerfile takes it as --build-arg BASE. Needs root and the Debian packages
# buildah, podman, runc and mmdebstrap (apt-get install buildah podman runc mmdebstrap).
#
#   hack/build-image.sh            build localhost/eventferry:dev, then the smoke run
#   EXTRAS='[examples]' IMAGE=localhost/eventferry-examples:dev hack/build-image.sh
#
# Environment: IMAGE, EXTRAS, SUITE (Debian suite of the base, bookworm: its python3 is 3.11),
# MIRROR, STORAGE_DRIVER (vfs: works inside a VM or container without overlay support),
# OCI_RUNTIME (runc: crun refuses a cgroup v1/v2 hybrid host), CACHE (the base tarball),
# SMOKE=0 to skip the run.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/eventferry:dev}
EXTRAS=${EXTRAS:-}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
OCI_RUNTIME=${OCI_RUNTIME:-runc}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eventferry-image}
BASE=localhost/eventferry-base:$SUITE
SMOKE=${SMOKE:-1}

for tool in buildah podman mmdebstrap "$OCI_RUNTIME"; do
  command -v "$tool" >/dev/null || { echo "[image] $tool is missing: apt-get install buildah podman runc mmdebstrap" >&2; exit 1; }
done
buildah=(buildah --storage-driver "$STORAGE_DRIVER")
podman=(podman --storage-driver "$STORAGE_DRIVER" --runtime "$OCI_RUNTIME")

# 1. The base: Debian's python3 (3.11 in bookworm) with venv, as a tarball, imported as an image.
# The CA certificates this machine trusts (/usr/local/share/ca-certificates, e.g. a proxy's) are
# added, so that pip in the build reaches the package index the way this machine does.
mkdir -p "$CACHE"
tarball=$CACHE/base-$SUITE.tar
if [ ! -s "$tarball" ]; then
  echo "[image] building the base from Debian packages ($SUITE) into $tarball"
  mmdebstrap --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates \
    --customize-hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"; chroot "$1" update-ca-certificates; fi' \
    "$SUITE" "$tarball.partial" "$MIRROR"
  mv "$tarball.partial" "$tarball"
fi
if ! "${podman[@]}" image exists "$BASE"; then
  echo "[image] importing $tarball as $BASE"
  "${podman[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE"
fi

# 2. The image, from the Dockerfile as it is. chroot isolation: RUN steps need no OCI runtime.
echo "[image] building $IMAGE"
"${buildah[@]}" bud --isolation chroot --build-arg BASE="$BASE" --build-arg EXTRAS="$EXTRAS" -t "$IMAGE" .

[ "$SMOKE" = 1 ] || exit 0

# 3. The smoke run, with the chart's securityContext: uid 65532, read-only root, a tmpfs on /tmp
# only, no capabilities, no privilege escalation. Low rlimits: the runtime may only lower them when
# root lacks CAP_SYS_RESOURCE (as in this VM).
run=("${podman[@]}" run --rm --network host --read-only --read-only-tmpfs=false --tmpfs /tmp
     --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges
     --ulimit nofile=1024:1024 --ulimit nproc=512:512)
work=$(mktemp -d)
trap 'rm -rf "$work"; "${podman[@]}" rm -f eventferry-smoke >/dev/null 2>&1 || true' EXIT
chmod 0777 "$work"

echo "[image] smoke: eventferry --help, operator --help"
"${run[@]}" "$IMAGE" --help >/dev/null
"${run[@]}" "$IMAGE" operator --help >/dev/null

echo "[image] smoke: eventferry crds into a writable volume"
"${run[@]}" -v "$work:/out" "$IMAGE" crds --output /out/crds --policies /out/policies.yaml >/dev/null
ls "$work/crds"/*.yaml >/dev/null

echo "[image] smoke: eventferry broker serving /healthz and /readyz from a contract file"
cat > "$work/contract.json" <<'EOF'
{"generation": 1, "brokers": [{"namespace": "default", "name": "b", "class": "InMemory", "triggers": []}]}
EOF
port=${SMOKE_PORT:-18089}
"${run[@]}" -d --name eventferry-smoke -v "$work:/contract:ro" "$IMAGE" \
  broker --contract-file /contract/contract.json --host 127.0.0.1 --port "$port" >/dev/null
for _ in $(seq 50); do
  python3 - "$port" <<'EOF' && break
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1)
except Exception:
    sys.exit(1)
EOF
  sleep 0.2
done
python3 -c "import sys, urllib.request; print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/healthz').read().decode())" "$port"
"${podman[@]}" stop -t 20 eventferry-smoke >/dev/null

echo "[image] smoke: eventferry adapter kafka|rocketmq stop on a missing configuration with exit code 2"
for kind in kafka rocketmq; do
  code=0
  out=$("${run[@]}" "$IMAGE" adapter "$kind" 2>&1) || code=$?
  if [ "$code" != 2 ] || ! grep -q "invalid adapter configuration" <<<"$out"; then
    echo "[image] adapter $kind: exit code $code, expected 2 and the variable missing:" >&2; echo "$out" >&2; exit 1
  fi
done
echo "[image] $IMAGE built and smoke-tested"

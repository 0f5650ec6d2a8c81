# One image for every component: `eventferry operator | broker | adapter kafka | adapter rocketmq`.
# `--build-arg EXTRAS='[examples]'` adds the live-stream example services (examples/live-stream/services).
# `--build-arg BASE=...` swaps the base image (any image with Python 3.11+, `python3 -m venv` and `useradd`);
# hack/build-image.sh builds one from Debian packages, without a registry (docs/image.md).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# A virtual environment at a fixed path: the same layout on every base (a distribution's own Python
# refuses `pip install` into its prefix), copied whole into the runtime stage. pip compiles every
# module to bytecode here, so nothing is compiled, or written, when the read-only container starts.
RUN python3 -m venv /opt/eventferry \
 && /opt/eventferry/bin/pip install --no-cache-dir --disable-pip-version-check ".${EXTRAS}"

FROM ${BASE}
COPY --from=build /opt/eventferry /opt/eventferry
# A fixed non-root user, so that runAsNonRoot checks pass without a runAsUser in every pod spec.
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin eventferry
USER 65532:65532
# The chart runs every container with readOnlyRootFilesystem and an emptyDir on /tmp only:
# no bytecode writes, no home directory.
ENV PATH=/opt/eventferry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
ENTRYPOINT ["eventferry"]
CMD ["--help"]

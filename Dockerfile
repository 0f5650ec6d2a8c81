# One image for every component: `eventferry operator | broker | adapter kafka | adapter rocketmq`.
# `--build-arg EXTRAS='[examples]'` adds the live-stream example services (examples/live-stream/services).
FROM python:3.11-slim AS build
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install ".${EXTRAS}"

FROM python:3.11-slim
COPY --from=build /install /usr/local
# A fixed non-root user, so that runAsNonRoot checks pass without a runAsUser in every pod spec.
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin eventferry
USER 65532:65532
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["eventferry"]
CMD ["--help"]

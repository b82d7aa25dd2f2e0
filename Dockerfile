# The gateway image. Build: `docker build -t icws-gateway .` (any platform python:3.11-slim has: add
# `--platform linux/amd64,linux/arm64` with buildx for a multi-arch image; every step compiles from source).
# Run, keeping the identity in ./data whoever owns it:
#   docker run -p 8080:8080 -p 9000:9000 -v "$PWD/data:/app/data" icws-gateway --ic-network-url https://icp0.io
# The container starts as root only to give the data directory to uid 10001 (see deploy/docker/entrypoint.sh),
# then runs the gateway as 10001. `--user 10001:10001` (or Kubernetes' runAsUser) never runs anything as root:
# the data directory must then be writable by 10001 already, and the container says what to run otherwise.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY icws_fast ./icws_fast
# Wheels of the gateway and of every dependency (the otel extra: --opentelemetry-collector-endpoint works).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[otel]"

FROM python:3.11-slim
RUN groupadd --gid 10001 icws && useradd --create-home --uid 10001 --gid 10001 icws
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "icws_fast[otel]" && rm -rf /wheels
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/icws-entrypoint
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/icws-healthcheck
WORKDIR /app
# ./data/key_pair (the gateway identity) and ./data/traces live in /app/data: mount it to keep the identity.
RUN mkdir -p /app/data && chown 10001:10001 /app/data
EXPOSE 8080 9000
# /health of the metrics server (--prometheus-endpoint; set ICWS_HEALTH_URL when you move it off port 9000).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["icws-healthcheck"]
ENTRYPOINT ["icws-entrypoint"]
CMD ["--gateway-address", "0.0.0.0:8080", "--prometheus-endpoint", "0.0.0.0:9000"]

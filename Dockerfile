# The gateway image: `docker build -t icws-gateway .` then
# `docker run -p 8080:8080 -p 9000:9000 -v $PWD/data:/app/data icws-gateway --ic-network-url https://icp0.io`
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY icws_fast ./icws_fast
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 icws
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
RUN mkdir -p /app/data && chown icws /app/data
USER icws
EXPOSE 8080 9000
# ./data/key_pair (the gateway identity) and ./data/traces live in /app/data: mount it to keep the identity.
ENTRYPOINT ["icws-gateway"]
CMD ["--gateway-address", "0.0.0.0:8080", "--prometheus-endpoint", "0.0.0.0:9000"]

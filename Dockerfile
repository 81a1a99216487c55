# The server with its web client (docs/deployment.md):
#   docker build -t miscord-sfu .
#   docker run --network host -e SFU_SECRET_FILE=/run/secrets/sfu \
#     -e SFU_ICE_HOSTS=203.0.113.10 miscord-sfu
# WebRTC media needs the ICE addresses and ports reachable: host networking, or
# --announced-ip and a published --rtc-ports range.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin miscord
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER miscord
ENV SFU_HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["miscord-sfu", "serve"]

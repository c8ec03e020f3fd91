# smartscheduler-realtime: slim, non-root, health-checked.
#
#   docker build -t smartscheduler-realtime .
#   docker run -p 5004:5004 -e AUTH_JWKS_URL=... -e AUTH_ISSUER=... -e AUTH_AUDIENCE=... \
#     -e RABBITMQ_URL=amqp://... smartscheduler-realtime
#
# Two stages: the first installs the project and its dependencies into a virtualenv (pip only; every
# dependency ships manylinux wheels, so no compiler is needed), the second copies that virtualenv
# onto a clean base. Configuration is environment variables only (config/settings.py); the image
# holds no secrets and no env file.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Metadata first: the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY service ./service
COPY consumers ./consumers
COPY broker ./broker
COPY publisher ./publisher
COPY schemas ./schemas
COPY config ./config
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/smartscheduler-realtime --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=5004 \
    LOG_FORMAT=json \
    AUTH_DEV_KEY_DIR=/var/lib/smartscheduler-realtime/dev
# A fixed numeric uid/gid, so orchestrators can verify runAsNonRoot. The dev key directory exists,
# owned by that user, so that a volume mounted there (docker-compose.yml) starts out writable.
RUN groupadd --system --gid 10001 realtime \
 && useradd --system --uid 10001 --gid realtime --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin realtime \
 && install -d -o realtime -g realtime -m 0700 /var/lib/smartscheduler-realtime/dev
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/smartscheduler-realtime
USER 10001:10001
EXPOSE 5004
# Liveness only (/healthz). Readiness — accepting connections and connected to RabbitMQ — is /readyz,
# for load balancers and orchestrators that distinguish the two.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '5004'), timeout=2)"]
# Exec form: the service is PID 1's child under `init: true`, or PID 1 itself, and receives SIGTERM
# directly; it stops consuming, tells clients to reconnect elsewhere and exits within
# SHUTDOWN_TIMEOUT_SECONDS.
STOPSIGNAL SIGTERM
ENTRYPOINT ["smartscheduler-realtime"]
CMD ["serve"]

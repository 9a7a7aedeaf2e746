# idwise-gateway container image. Usage and rationale: docs/container.md.
#
#   docker build -t idwise-gateway .
#   docker run --rm -p 8080:8080 -v idwise-data:/var/lib/idwise-gateway \
#     --env-file gateway.env idwise-gateway
#
# Layout:   /opt/idwise-gateway                 virtualenv: the gateway and the pinned dependencies of requirements.lock (no pip)
#           /etc/idwise-gateway/config.yaml     config (default: deploy/config.yaml; mount yours read-only)
#           /etc/idwise-gateway/rules/          rules files (default: the repository's rules/)
#           /usr/local/libexec/idwise-gateway/  scripts used by script destinations
#           /var/lib/idwise-gateway             VOLUME: the SQLite store and files written by scripts

# ---------------------------------------------------------------------------- build stage
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/idwise-gateway
ENV PATH=/opt/idwise-gateway/bin:$PATH
WORKDIR /src

# Dependencies first, from the lock file alone, so editing the code reuses this layer:
# exact versions with their hashes (pip refuses anything else), nothing resolved at build
# time. Regenerate requirements.lock when pyproject.toml's dependencies change.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# Then the package itself (README.md is the project's `readme` and LICENSE its license file,
# setuptools reads both). --no-deps: every dependency came from the lock above.
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
# The installers leave the virtualenv last: the runtime image copies it without them.
RUN pip install --no-deps . \
 && idwise-gateway --version \
 && pip check \
 && pip uninstall --yes pip setuptools \
 && ! python -c "import pip" 2>/dev/null \
 && ! python -c "import setuptools" 2>/dev/null

# -------------------------------------------------------------------------- runtime stage
FROM python:3.11-slim

# tini as PID 1: forwards SIGTERM/SIGHUP/SIGINT to the gateway and reaps orphaned
# grandchildren of script destinations (the gateway only reaps its own children; as PID 1
# it would leave them as zombies). `-s` (subreaper) keeps reaping when something else is
# PID 1: `docker run --init`, or Kubernetes with shareProcessNamespace.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# Fixed numeric ids so Kubernetes' runAsNonRoot can verify them and volumes can be chowned.
RUN groupadd --system --gid 10001 idwise \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/idwise-gateway \
        --no-create-home --shell /usr/sbin/nologin idwise \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/idwise-gateway

COPY --from=build /opt/idwise-gateway /opt/idwise-gateway
COPY scripts/ /usr/local/libexec/idwise-gateway/
COPY deploy/config.yaml /etc/idwise-gateway/config.yaml
COPY rules/ /etc/idwise-gateway/rules/
# Root-owned, readable (scripts executable) but not writable by the gateway user, whatever
# the build host's umask was. (A RUN rather than COPY --chmod: works without BuildKit too.)
RUN chmod -R u=rwX,go=rX /etc/idwise-gateway /usr/local/libexec/idwise-gateway \
 && chmod 0755 /usr/local/libexec/idwise-gateway/*

ENV PATH=/opt/idwise-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IDWISE_GATEWAY_CONFIG=/etc/idwise-gateway/config.yaml \
    IDWISE_GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz

VOLUME ["/var/lib/idwise-gateway"]
WORKDIR /var/lib/idwise-gateway
USER 10001:10001

# Webhook listener. The admin listener (9091: /metrics, POST /-/reload) binds 127.0.0.1 by
# default and is deliberately not exposed; see docs/container.md.
EXPOSE 8080

# Liveness without curl: the image's own Python, proxies ignored. Kubernetes ignores
# HEALTHCHECK and uses its own probes (deploy/kubernetes.yaml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ['IDWISE_GATEWAY_HEALTHCHECK_URL'], timeout=4)"]

# SIGTERM: the gateway stops accepting, finishes in-flight deliveries within
# server.shutdown_grace (10s), exits 0; give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "-s", "--", "idwise-gateway"]
CMD ["serve"]

# The image of every EcoSort service, built from the repository root (one uv workspace, one
# lock file); SERVICE picks the member:
#   docker build --build-arg SERVICE=waste -t ecosort/waste .
# The waste image also runs the Celery worker (the chart sets the command):
#   celery -A ecosort_waste.worker worker -Q analyses --prefetch-multiplier=1
#
# Base image: python:3.11-slim-bookworm pinned by digest, the same in both stages so the venv's
# interpreter path matches (docs/deploy.md says how the digest is refreshed).

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS builder
ARG SERVICE
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The same uv as the Makefile's bootstrap; it stays in this stage only.
RUN test -n "$SERVICE" || { echo "--build-arg SERVICE=<auth|users|waste|recycling|locations>" >&2; exit 1; } \
    && pip install --no-cache-dir uv==0.13.9
WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file or a pyproject.toml changes.
# uv needs every workspace member's pyproject.toml to read the workspace.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY services/auth/pyproject.toml services/auth/
COPY services/users/pyproject.toml services/users/
COPY services/waste/pyproject.toml services/waste/
COPY services/recycling/pyproject.toml services/recycling/
COPY services/locations/pyproject.toml services/locations/
COPY tools/devstack/pyproject.toml tools/devstack/
COPY tools/k8scheck/pyproject.toml tools/k8scheck/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "ecosort-${SERVICE}"

# Then the code: the service and ecosort-common installed as wheels (not editable), so the
# runtime stage needs the venv only.
COPY libs/common/src libs/common/src
COPY services/${SERVICE}/src services/${SERVICE}/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "ecosort-${SERVICE}"

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS runtime
ARG SERVICE
# checkov:skip=CKV_DOCKER_2: Kubernetes probes (/healthz, /readyz, the worker heartbeat) replace HEALTHCHECK, which Kubernetes ignores.
ENV SERVICE_PACKAGE=ecosort_${SERVICE} \
    PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed uid/gid (10001) that the charts' securityContext states too.
RUN groupadd --system --gid 10001 ecosort \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin ecosort
COPY --from=builder /app/.venv /app/.venv

# waste's classifier (ONNX model + trained head) is package data, installed with the package:
# fail the build if it was not baked in, rather than at the first analysis.
RUN if [ "$SERVICE" = waste ]; then python -c "import pathlib, ecosort_waste; m = pathlib.Path(ecosort_waste.__file__).parent / 'classifier' / 'artifacts'; assert any(m.glob('*.onnx')), f'no ONNX model in {m}'"; fi
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# The charts set the exact command; by default the API serves on 8000 (ecosort_common.cli).
CMD ["sh", "-c", "exec python -m \"$SERVICE_PACKAGE\" serve --host 0.0.0.0 --port 8000"]

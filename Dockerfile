# One image for every production process of proximate: the Dask scheduler (routing preload), the regional workers,
# `proximate autoscale` and the Prefect ECS worker and server. The command chooses the role; see docs/production.md.
#
#   docker build -t proximate:0.1.0 .
#
# Stage 1 builds the project's wheel and a virtual environment from wheels only (every dependency publishes
# manylinux wheels for Python 3.11); stage 2 is the same slim base with that environment copied in: no compilers,
# no pip cache, no build tools.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/proximate
COPY pyproject.toml README.md ./
COPY proximate ./proximate
COPY flows ./flows
COPY tasks ./tasks
COPY blocks ./blocks
COPY deployments ./deployments
# setuptools builds our own wheel (the only sdist); every dependency comes as a wheel, versions from pyproject.toml.
RUN /opt/proximate/bin/pip install --no-cache-dir "setuptools==80.9.0" "wheel==0.45.1" \
    && /opt/proximate/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/proximate/bin/pip install --no-cache-dir --only-binary :all: /wheels/proximate-0.1.0-py3-none-any.whl \
    && /opt/proximate/bin/pip uninstall --yes setuptools wheel

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="proximate" \
      org.opencontainers.image.description="Data-proximate computing: scheduler, regional workers, autoscaler, Prefect" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/proximate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1
# A fixed uid/gid: the worker instances chown the FSx mount to it (deployments/aws/region.py).
RUN groupadd --system --gid 10001 proximate \
    && useradd --system --uid 10001 --gid proximate --home-dir /home/proximate --create-home proximate \
    && mkdir /fsx && chown proximate:proximate /fsx
COPY --from=build /opt/proximate /opt/proximate
COPY docker/entrypoint.sh /usr/local/bin/proximate-entrypoint
COPY docker/healthcheck.py /usr/local/lib/proximate-healthcheck.py
USER 10001:10001
WORKDIR /home/proximate
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/proximate-healthcheck.py"]
ENTRYPOINT ["/usr/local/bin/proximate-entrypoint"]
CMD ["proximate", "--help"]

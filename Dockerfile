# The image of the operator, the router and the migration Jobs (`make image`).
# Two stages: the build stage installs the package; the final stage is the slim
# Python base plus the installed files, run as a numeric non-root user. Nothing
# is written outside /tmp at run time (HOME and the working directory are there),
# so it runs with a read-only root filesystem and an emptyDir at /tmp.
# The image holds the product alone: the versions of the lock, no extra (no
# emulated Kubernetes API, no test tools) and no demo data (.dockerignore).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY requirements ./requirements
COPY operator ./operator
RUN pip install --prefix=/install -c requirements/constraints.txt .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /install /usr/local
# kubelet only enforces runAsNonRoot with a numeric user.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["librarian"]
CMD ["operator"]

# The operator image: `librarian operator` as a numeric non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# kubelet only enforces runAsNonRoot with a numeric user.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["librarian"]
CMD ["operator"]

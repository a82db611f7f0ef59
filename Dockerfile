# Multi-stage build: compile the `catalog` binary, then run it on a slim image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p catalog-api --bin catalog

FROM debian:bookworm-slim
# curl: docker-compose.yml's healthchecks ask /readyz with it (Kubernetes
# probes need nothing in the image). A fixed numeric user, so that
# Kubernetes' runAsNonRoot can verify it (deploy/kubernetes).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 catalog \
    && useradd --system --uid 10001 --gid 10001 --home /app catalog
WORKDIR /app
COPY --from=build /src/target/release/catalog /usr/local/bin/catalog
COPY examples ./examples
RUN mkdir -p /app/data && chown catalog:catalog /app/data
USER 10001:10001
ENV CATALOG_SERVER__HOST=0.0.0.0
EXPOSE 7007
ENTRYPOINT ["catalog"]
CMD ["serve"]

# Multi-stage build: compile the `catalog` binary, then run it on a slim image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p catalog-api --bin catalog

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app catalog
WORKDIR /app
COPY --from=build /src/target/release/catalog /usr/local/bin/catalog
COPY examples ./examples
RUN mkdir -p /app/data && chown catalog /app/data
USER catalog
ENV CATALOG_SERVER__HOST=0.0.0.0
EXPOSE 7007
ENTRYPOINT ["catalog"]
CMD ["serve"]

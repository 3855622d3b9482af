# syntax=docker/dockerfile:1
# One image for both roles:
#   issuer   (default)  docker run firstcome serve --listen 0.0.0.0:8080 ...
#   operator            docker run --entrypoint /usr/local/bin/firstcome-operator firstcome ...
# The Helm chart and the operator set the entrypoint of each Deployment.

ARG RUST_VERSION=1.95
# The base images' names, for builders that cannot pull them (scripts/image builds
# local stand-ins and passes their names here); a plain `docker build .` uses these.
ARG RUST_IMAGE=rust
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12

# cargo-chef splits dependency compilation into its own layer, rebuilt only when a
# manifest or Cargo.lock changes, not on every source edit.
FROM ${RUST_IMAGE}:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        -p firstcome-issuer -p firstcome-operator
COPY . .
RUN cargo build --release --locked -p firstcome-issuer -p firstcome-operator --bin firstcome-issuer --bin firstcome-operator
# librdkafka links zlib, which distroless cc has not: stage it at its own path.
RUN mkdir -p /src/runtime-libs \
    && cp -L --parents "$(realpath -s "$(gcc -print-file-name=libz.so.1)")" /src/runtime-libs/

# Distroless: no shell, no package manager; runs as the unprivileged "nonroot" user.
FROM ${RUNTIME_IMAGE}:nonroot
COPY --from=build /src/target/release/firstcome-issuer /src/target/release/firstcome-operator /usr/local/bin/
COPY --from=build /src/runtime-libs/ /
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/firstcome-issuer"]

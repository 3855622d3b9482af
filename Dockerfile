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

# One build stage. Its RUN keeps the crates registry and the target directory in cache
# mounts (BuildKit's and buildah's `--mount=type=cache`), which outlive the layer: a
# change to a source file, to the tests crate or to Cargo.lock recompiles only the
# crates it touches, never every dependency. A cache mount is not part of the layer, so
# the same RUN copies the binaries (and librdkafka's zlib, which distroless cc has not,
# at its own path) out of it into /out.
FROM ${RUST_IMAGE}:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=firstcome-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=firstcome-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p firstcome-issuer -p firstcome-operator \
        --bin firstcome-issuer --bin firstcome-operator \
    && mkdir -p /out/bin /out/libs \
    && cp target/release/firstcome-issuer target/release/firstcome-operator /out/bin/ \
    && cp -L --parents "$(realpath -s "$(gcc -print-file-name=libz.so.1)")" /out/libs/

# Distroless: no shell, no package manager; runs as the unprivileged "nonroot" user.
FROM ${RUNTIME_IMAGE}:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/libs/ /
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/firstcome-issuer"]

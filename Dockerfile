# syntax=docker/dockerfile:1
# corsgate: multi-stage build, small non-root runtime image.
#
#   docker build -t corsgate .
#   docker run --rm -p 8080:8080 corsgate                      # the demo configuration
#   docker run --rm -p 8080:8080 -v "$PWD/config:/app/config:ro" corsgate   # your own config/
#
# The image runs `corsgate serve --config config/corsgate.toml --listen 0.0.0.0:8080` in /app;
# paths in the config are relative to its directory, so mount it and its rules on /app/config.
# Its health is `corsgate healthcheck` asking the admin listener that config names for /readyz
# (`docker inspect --format '{{json .State.Health}}'` shows the reason of the last check).
# Built without .git in the context, so `corsgate --version` has no commit.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Only what the binary is built from: the tests and the benchmarks (a package of their own,
# benches/Cargo.toml) stay out of the build context's copy.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin corsgate \
    && cp target/release/corsgate /corsgate

# distroless "cc": glibc and libgcc only, no shell, runs as uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /corsgate /usr/local/bin/corsgate
COPY --chown=65532:65532 config ./config
USER 65532:65532
EXPOSE 8080
# Exec form: the image has no shell. A failed check exits 1 (unhealthy), never 2, which Docker
# reserves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/corsgate", "healthcheck", "--config", "config/corsgate.toml"]
ENTRYPOINT ["/usr/local/bin/corsgate"]
CMD ["serve", "--config", "config/corsgate.toml", "--listen", "0.0.0.0:8080"]

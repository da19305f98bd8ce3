# streamguard container image: a static-ish release build on Debian bookworm, run as a
# non-root user. No Docker engine runs in CI: tests/container.rs builds the binary from
# exactly the files this file COPYs and starts it with the container config; see README.
#
#   docker build -t streamguard .
#   docker run --rm -p 9898:9898 -v $PWD/streamguard.toml:/etc/streamguard/streamguard.toml:ro streamguard
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev libsasl2-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild librdkafka. The manifest names
# bench targets, and cargo reads their files to load it: copy the whole benches/ (any
# bench added later is covered).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin streamguard \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin streamguard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin streamguard
COPY --from=build /src/target/release/streamguard /usr/local/bin/streamguard
# The repository's streamguard.toml is the demo's (rules/, stack/ paths): the image
# gets a config that starts with no rules and keeps its state in a directory it owns.
COPY deploy/container/streamguard.toml /etc/streamguard/streamguard.toml
RUN mkdir -p /var/lib/streamguard && chown 10001:10001 /var/lib/streamguard
USER 10001:10001
# Listen on all interfaces inside the container; the config file's default is loopback.
ENV STREAMGUARD_CONFIG=/etc/streamguard/streamguard.toml \
    STREAMGUARD_LISTEN=0.0.0.0:9898
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/streamguard"]
CMD ["run"]

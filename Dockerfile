# streamguard container image: a static-ish release build on Debian bookworm, run as a
# non-root user. Not built in CI (no Docker engine on our CI machines); see README.
#
#   docker build -t streamguard .
#   docker run --rm -p 9898:9898 -v $PWD/streamguard.toml:/etc/streamguard/streamguard.toml:ro streamguard
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev libsasl2-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild librdkafka.
COPY Cargo.toml Cargo.lock ./
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
COPY streamguard.toml /etc/streamguard/streamguard.toml
USER 10001:10001
# Listen on all interfaces inside the container; the config file's default is loopback.
ENV STREAMGUARD_CONFIG=/etc/streamguard/streamguard.toml \
    STREAMGUARD_LISTEN=0.0.0.0:9898
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/streamguard"]
CMD ["run"]

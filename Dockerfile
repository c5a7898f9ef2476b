# Builds p2p on Debian 12 with the same install script CI uses.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh
COPY . .
RUN bash scripts/patch-deps.sh && cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/scripts/install-deps.sh /usr/local/share/p2p/install-deps.sh
RUN bash /usr/local/share/p2p/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/p2p /usr/local/bin/p2p
EXPOSE 8000
ENTRYPOINT ["p2p"]
CMD ["signal", "--listen", "0.0.0.0:8000"]

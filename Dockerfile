# shareaudit's image: a static-enough binary (librdkafka, OpenSSL and zlib
# are built in) on a distroless base, running as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin shareaudit

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/shareaudit /usr/local/bin/shareaudit
COPY --from=build /src/schemas /usr/share/shareaudit/schemas
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/shareaudit"]
CMD ["run"]

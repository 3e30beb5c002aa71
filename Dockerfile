# cgnat container image: the daemon alone on debian:bookworm-slim.
#
#   docker build -t cgnat .                    # or: make docker
#   docker run --rm --network host \
#       --cap-add NET_ADMIN --cap-add BPF --cap-add SYS_ADMIN --cap-add PERFMON \
#       -v /sys/fs/bpf:/sys/fs/bpf -v /etc/cgnat.toml:/etc/cgnat.toml:ro cgnat
#
# --network host       XDP attaches to the host's interfaces, and the FIB and
#                      neighbour look-ups must see the host's routes.
# --cap-add BPF        load the XDP program, create its maps and links.
# --cap-add PERFMON    the verifier accepts the program's pointer arithmetic
#                      only from a loader with CAP_PERFMON (or CAP_SYS_ADMIN).
# --cap-add NET_ADMIN  attach XDP to the interfaces, rtnetlink neighbour
#                      requests.
# --cap-add SYS_ADMIN  mount bpffs when /sys/fs/bpf is not one, setns for
#                      --netns; Docker's seccomp profile gates bpf() on it on
#                      engines that predate CAP_BPF.
# -v /sys/fs/bpf       the host's bpffs: the pinned tables outlive the
#                      container's mount namespace and `cgnat stats` /
#                      `cgnat sessions` on the host (or `docker exec`) see them.
# -v /etc/cgnat.toml   the host's configuration, read-only.
#
# The container's /proc/sys is read-only: with the default
# fib_lookup = "loopback", set net.ipv4.conf.lo.forwarding=1 on the host
# first (cgnat only writes it when it is 0). The daemon runs as root in the
# container (it requires euid 0). Other subcommands: append them, e.g.
# `docker run --rm -v /etc/cgnat.toml:/etc/cgnat.toml:ro cgnat check`.
# See packaging/README.md.

FROM rust:1-bookworm AS builder
# Debian's versions follow the base image's point release: not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang llvm libelf-dev zlib1g-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies in their own layer: a source change does not download them again.
# The workspace names the kit crate (kit/: test bed, benchmark), so its
# manifest and targets are stubbed too; only the product is built.
COPY Cargo.toml Cargo.lock ./
COPY kit/Cargo.toml kit/
RUN mkdir -p src kit/src/bin kit/benches \
    && touch src/lib.rs src/main.rs kit/src/lib.rs kit/src/bin/cgnat-demo.rs kit/benches/datapath.rs \
    && cargo fetch --locked && rm -r src kit
COPY . .
RUN cargo build --release --locked -p cgnat --bin cgnat \
    && strip --remove-section=.comment --remove-section=.note --strip-unneeded target/release/cgnat

FROM debian:bookworm-slim
# libc6, libgcc-s1 and zlib1g are in the base image; libelf1 is not.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libelf1 zlib1g \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/target/release/cgnat /usr/bin/cgnat
COPY configs/cgnat.toml /etc/cgnat.toml
ENTRYPOINT ["/usr/bin/cgnat"]
CMD ["--config", "/etc/cgnat.toml"]

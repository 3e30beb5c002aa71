# cgnat - make targets. Everything that needs root says so; the test and
# demo targets install their own dependencies (Debian 12).

CARGO      ?= cargo
ARGS       ?= --config configs/cgnat.toml
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -Wall -Werror -Wimplicit-fallthrough \
              -Iinclude -Ibpf -I/usr/include/$(shell uname -m)-linux-gnu -Itarget/bpf/include
APT_PKGS   := clang llvm libelf-dev zlib1g-dev pkg-config make iproute2 ethtool python3-scapy coturn traceroute bird2 \
              iputils-ping tcpdump nftables iptables conntrack bpftool util-linux podman runc iperf3 tshark

.PHONY: all deps build debug build-ebpf build-user run demo test test-unit lint fmt clean

all: build

## deps: install the build and test dependencies (apt; root)
deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (apt-get)"; exit 1; fi
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "make deps: cargo not found (install Rust with rustup)"; exit 1; }

## build: release build of the daemon with its XDP program
build:
	$(CARGO) build --release

## debug: debug build
debug:
	$(CARGO) build

## build-ebpf: compile the XDP object alone (target/bpf/cgnat.bpf.o), for inspection
build-ebpf:
	@mkdir -p target/bpf/include
	@# the libbpf headers (bpf_helpers.h ...) come with the libbpf-sys crate
	@src=$$(ls -d $${CARGO_HOME:-$$HOME/.cargo}/registry/src/*/libbpf-sys-*/libbpf/src 2>/dev/null | tail -1); \
	if [ -z "$$src" ]; then $(CARGO) fetch -q; src=$$(ls -d $${CARGO_HOME:-$$HOME/.cargo}/registry/src/*/libbpf-sys-*/libbpf/src | tail -1); fi; \
	ln -sfn "$$src" target/bpf/include/bpf
	clang $(BPF_CFLAGS) -c bpf/cgnat.bpf.c -o target/bpf/cgnat.bpf.o
	@echo "target/bpf/cgnat.bpf.o"

## build-user: the Rust daemon (build.rs regenerates the skeleton as needed)
build-user:
	$(CARGO) build --release --bin cgnat

## run: run the daemon in the foreground (root): make run ARGS="--config FILE"
run: build
	./target/release/cgnat $(ARGS)

## demo: network-namespace demo (root): cgnat-demo (kit/) runs the cgnat binary
demo: deps build
	$(CARGO) build --release -p cgnat-kit --bin cgnat-demo
	./target/release/cgnat-demo

## test: every test: unit, BPF_PROG_TEST_RUN packet tables, netns end-to-end (root)
## (the tests live in the kit crate and run the cgnat binary built first)
test: deps lint
	$(CARGO) build --release --bin cgnat
	$(CARGO) test --release --workspace -- --nocapture

## test-unit: unprivileged unit tests only
test-unit:
	$(CARGO) test --release --workspace --lib --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

.PHONY: deb image

## deb: Debian package target/debian/cgnat_<version>-1_<arch>.deb (see packaging/README.md)
deb:
	$(CARGO) build --release --locked --bin cgnat
	packaging/build-deb.sh

## image: container image cgnat:<version>, a static binary FROM scratch, no registry
## needed (podman or docker; see packaging/README.md)
image:
	packaging/build-image.sh

.PHONY: bench
## bench: the benchmark suite (root; docs/performance.md): release build, then
## cargo bench -p cgnat-kit --bench datapath prints the table and writes target/bench/summary.json
bench: deps
	@dpkg -s iperf3 >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null; }
	$(CARGO) build --release
	$(CARGO) bench -p cgnat-kit --bench datapath

# The one entry point. `make run` starts the hello example; `make test` runs every test.
# Cargo installs the pinned toolchain itself (rust-toolchain.toml) through rustup.

CARGO ?= cargo
WF_HOST := $(CARGO) run --quiet -p wf-host --
# Where `make install` puts wf-host and wf-plugin: rustup's bin folder, already on the PATH.
BINDIR ?= $(HOME)/.cargo/bin
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
FIRST_BUILD_NOTE := the first build compiles wasmtime: 10 to 20 minutes on a small machine

.PHONY: run install test soak lint bench fmt validate-examples check-toolchain plugins

# Where `make plugins` puts the built components (tests and examples read them from here).
PLUGINS_DIST := plugins/dist
PLUGINS_TARGET := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),plugins/target)

## run: build wf-host and run example/hello/app.yaml (http://127.0.0.1:8080/hello)
run: check-toolchain
	@echo "building wf-host ($(FIRST_BUILD_NOTE)), then running example/hello/app.yaml"
	$(CARGO) build -p wf-host
	$(WF_HOST) run example/hello/app.yaml

## install: build wf-host and wf-plugin (release) and put them in $(BINDIR)
install: check-toolchain
	@echo "building wf-host and wf-plugin in release mode ($(FIRST_BUILD_NOTE))"
	$(CARGO) build --release -p wf-host -p wf-plugin
	@mkdir -p $(BINDIR)
	install -m 755 $(TARGET_DIR)/release/wf-host $(TARGET_DIR)/release/wf-plugin $(BINDIR)/
	@echo "installed wf-host and wf-plugin in $(BINDIR)"
	@command -v wf-host >/dev/null 2>&1 || echo "note: $(BINDIR) is not on your PATH: add it there"

## plugins: build the first-party components and test fixtures (wasm32-wasip2) into plugins/dist
plugins: check-toolchain
	@# rust-toolchain.toml names the target, but a toolchain installed before it may lack it.
	@if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then \
	  rustup target add wasm32-wasip2; fi
	@echo "building wf's own components for wasm32-wasip2 (a few minutes the first time)"
	$(CARGO) build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
	@mkdir -p $(PLUGINS_DIST)
	@for f in hello sentiment alert_classify pii_redact adversary counter alert_intake; do \
	  cp "$(PLUGINS_TARGET)/wasm32-wasip2/release/$$f.wasm" $(PLUGINS_DIST)/ || exit 1; done

## test: every test of every crate (plugins and SDK included), then `wf-host validate` on every bundled example
test: check-toolchain plugins
	$(CARGO) test --quiet --manifest-path plugins/Cargo.toml
	$(CARGO) test --workspace --all-targets
	$(MAKE) --no-print-directory validate-examples

## soak: the long variants of the hardening suites (docs/security.md): a 10-minute soak and
## 40 times the property-test cases; `make test` runs the short ones
soak: check-toolchain plugins
	WF_SOAK_SECS=600 $(CARGO) test --workspace --test soak -- --nocapture
	WF_FUZZ_CASES=10000 WF_FUZZ_WASM_CASES=500 $(CARGO) test --workspace --test fuzz

## validate-examples: `wf-host validate` on every app in example/ (files under `parts/` are
## fragments that the apps import, not apps)
validate-examples:
	@for f in $$(find example -name '*.yaml' -not -path '*/parts/*' | sort); do $(WF_HOST) validate "$$f" || exit 1; done

## lint: formatting and clippy with warnings as errors
lint: check-toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --all --manifest-path plugins/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path plugins/Cargo.toml --workspace --all-targets -- -D warnings

## bench: HTTP pipeline vs bare axum under wrk, and executor overhead per step (see docs/benchmarks.md)
bench: check-toolchain
	bench/http.sh

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --all --manifest-path plugins/Cargo.toml

check-toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { \
		echo "cargo is not installed: install rustup (https://rustup.rs), then run make again;"; \
		echo "the pinned toolchain in rust-toolchain.toml is installed automatically."; exit 1; }

# rewardhooks: the two commands are `make run` and `make test`.
CARGO ?= cargo

.PHONY: test-slow browser check-guarantees bench-micro docs examples guide run demo build release test test-alerts test-deploy test-docker fuzz unit lint fmt check-config openapi bench clean-broker

## Start everything on an embedded Kafka (no Kafka needed).
run:
	$(CARGO) run --release -- dev

## Same, plus a local receiver and sample events every few seconds.
demo:
	$(CARGO) run --release -- dev --demo

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Every test: installs Tansu if missing, starts it on a free port unless
## KAFKA_BOOTSTRAP is set, runs unit and integration tests, stops it.
test: test-alerts test-deploy examples check-guarantees browser
	scripts/tansu.sh install
	@s=$$(date +%s) && scripts/tansu.sh run $(CARGO) test --lib --bins --tests --examples -- --test-threads=2 \
	  && echo "test: the cargo tests (with their build) took $$(( $$(date +%s) - s )) s"
	$(CARGO) test --benches

## The slow tier, left out of `make test` to keep it near ten minutes; CI
## (.ci/run) runs it after `make test`, and `make test test-slow` is
## everything. It prints how long each part took. In order:
## - the release-build checks: the Dockerfile replay (`make test-docker`) and
##   the quickstart and guides run as written (`make guide`; they build and
##   run release binaries, as a reader would);
## - the slow fault tests (`test = false` in Cargo.toml): tests/slow.rs (a
##   rolling restart under load, a join and a leave under backlog, a restart
##   before the subscription view caught up) and tests/outage.rs (the broker
##   paused with work in flight; it pauses the broker, and cargo runs test
##   binaries one after another);
## - the integration tests that take over a minute each (`#[ignore]` in
##   tests/it: a 50,000-event burst, three instances with a death and a join,
##   the owner-scope changes, a recovery whose instance is killed).
test-slow:
	@s=$$(date +%s) && $(MAKE) --no-print-directory test-docker && echo "test-slow: Dockerfile replay took $$(( $$(date +%s) - s )) s"
	@s=$$(date +%s) && $(MAKE) --no-print-directory guide && echo "test-slow: guides took $$(( $$(date +%s) - s )) s"
	scripts/tansu.sh install
	@s=$$(date +%s) && scripts/tansu.sh run $(CARGO) test --test slow --test outage -- --test-threads=2 && echo "test-slow: slow fault tests took $$(( $$(date +%s) - s )) s"
	@s=$$(date +%s) && scripts/tansu.sh run $(CARGO) test --test it -- --ignored --test-threads=2 && echo "test-slow: the ignored it tests took $$(( $$(date +%s) - s )) s"

## The portal's browser test needs Debian's chromium and chromium-driver:
## installed when missing (as root); a failed install is an error when
## CHECKS_REQUIRED=1 (CI), otherwise the browser test skips with a message.
browser:
	@scripts/install-browser.sh || { echo "browser not installed: the portal browser test will skip" >&2; \
	  if [ "$${CHECKS_REQUIRED:-0}" = 1 ]; then exit 1; fi; }

## docs/guarantees.md names only tests that exist (and prints its counts).
check-guarantees:
	python3 scripts/check-guarantees.py

## Alert rules: syntax and unit tests (promtool, from Debian's prometheus),
## every alert tested firing and quiet, with severity, summary, description,
## runbook_url and a runbook; alerts and dashboard use only known metrics.
## Without promtool: skipped, or an error when CHECKS_REQUIRED=1 (CI).
test-alerts:
	scripts/check-alert-tests.sh
	scripts/check-metrics-used.sh
	@if command -v promtool >/dev/null 2>&1; then \
	  promtool check rules deploy/prometheus/alerts.yml && \
	  promtool test rules deploy/prometheus/alerts_test.yml; \
	elif [ "$${CHECKS_REQUIRED:-0}" = 1 ]; then \
	  echo "promtool not installed (apt-get install prometheus)" >&2; exit 1; \
	else echo "promtool not installed: alert rules not checked (apt-get install prometheus)"; fi

## End-to-end benchmark (release build, benches/e2e.rs): throughput,
## latency, idle cost, outage writes, recovery and memory next to an HTTP and
## a Kafka baseline measured in the same run, with every signature verified
## and per-process CPU (docs/performance.md says what each phase measures).
## About ten minutes; BENCH_SCALE=0.1 for a look in a minute or two,
## BENCH_PHASES=http,throughput,latency (also kafka, scaleout, step, idle, outage,
## recovery, memory) to pick phases; the instances inherit the environment,
## so REWARDHOOKS__KAFKA__FETCH_WAIT=50ms make bench tries a setting.
## Writes target/bench/latest.json and latest.svg; the SVG is copied to
## docs/bench-latest.svg, which docs/performance.md embeds (commit it with
## the figures table when publishing a run).
bench:
	scripts/tansu.sh install
	scripts/tansu.sh run $(CARGO) bench --bench e2e
	cp target/bench/latest.svg docs/bench-latest.svg

## Property-based fuzzing of the event decoder and the filter evaluator,
## bounded: FUZZ_CASES cases per property (default 20000).
FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --test fuzz

## Kubernetes manifests: both layouts render (kubectl kustomize), validate
## against the Kubernetes schemas (kubernetes-validate from PyPI, which bundles
## them; CRDs such as ServiceMonitor are only warned about) and keep the
## deployment rules (scripts/check-deploy.sh). The validator goes into a venv
## under .cache (Debian's Python refuses global pip installs) unless one is on
## PATH. A failed install is an error when CHECKS_REQUIRED=1 (CI), a skip
## otherwise.
KUBERNETES_VALIDATE_VERSION = 1.37.0
DEPLOY_VENV = .cache/deploy-venv
test-deploy:
	@if ! command -v kubernetes-validate >/dev/null 2>&1 && [ ! -x $(DEPLOY_VENV)/bin/kubernetes-validate ]; then \
	  rm -rf $(DEPLOY_VENV); \
	  (python3 -m venv $(DEPLOY_VENV) && $(DEPLOY_VENV)/bin/pip install --quiet kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)) >/dev/null 2>&1 \
	  || { rm -rf $(DEPLOY_VENV); echo "could not install kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION) into $(DEPLOY_VENV)" >&2; \
	       if [ "$${CHECKS_REQUIRED:-0}" = 1 ]; then exit 1; fi; }; \
	fi
	PATH="$(CURDIR)/$(DEPLOY_VENV)/bin:$$PATH" scripts/check-deploy.sh

## The Dockerfile without Docker: replays its build stage on the host (real
## `cargo build --release --locked`, target/ as the cache), checks the
## dependency stubs against Cargo.toml, .dockerignore, and the runtime
## stage's packages against what the binary links (scripts/check-dockerfile.sh).
test-docker:
	scripts/check-dockerfile.sh

## The Python and Node receiver snippets verify a freshly signed sample with
## the Standard Webhooks libraries (installed into .cache/examples).
examples: build
	scripts/check-examples.sh

## Criterion micro-benchmarks: signing, decoding, matching.
bench-micro:
	$(CARGO) bench --bench micro

## Run the README quickstart and the four integration guides as written (their
## `sh` blocks, extracted from the markdown) against a `rewardhooks dev`;
## Rust, Python and Node receivers. A guide whose commands fail fails this.
guide:
	scripts/check-guide.sh

## Unit tests only; nothing needs to run.
unit:
	$(CARGO) test --lib

lint:
	python3 scripts/check-modules.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --test slow --test outage -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate the committed OpenAPI document from the handlers.
openapi:
	$(CARGO) run --quiet -- openapi > src/api/openapi.json

## Regenerate the generated reference pages: docs/events.md (payloads, from
## config/events/), docs/metrics.md (the metrics registry) and
## docs/configuration-reference.md (config/default.toml).
docs:
	$(CARGO) run --quiet -- docs-events > docs/events.md
	$(CARGO) run --quiet -- docs-metrics > docs/metrics.md
	$(CARGO) run --quiet -- docs-config > docs/configuration-reference.md

check-config:
	$(CARGO) run -- check-config

clean-broker:
	rm -rf .cache/tansu

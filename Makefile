# quorumq — build, run, test. Everything a fresh machine needs is installed
# by these targets (Go modules from the module proxy, buf from npm).

GO        ?= go
BIN       := $(CURDIR)/bin
BUF       := $(BIN)/npm/node_modules/@bufbuild/buf-linux-x64/bin/buf
BUF_VERSION          := 1.75.0
PROTOC_GEN_GO        := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC   := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOC_GEN_GATEWAY   := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.32.0
PROTOC_GEN_OPENAPI   := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.32.0
STATICCHECK          := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Packages whose concurrency is tested under the race detector.
RACE_PKGS := ./store/... ./raftnode/... ./server/... ./internal/... ./sdk/... ./sqs/...

.PHONY: all build build-chaos run cluster bench bench-peers chaos test-topic-kill test test-fuzz test-unit test-race test-e2e generate check-generated tools lint fmt clean test-ts test-deploy test-ui ui-screenshots test-sqs

all: build

build:
	$(GO) build -o $(BIN)/quorumq ./cmd/quorumq

## build-chaos: the fault-test binary (accepts --fault-injection; production builds refuse it)
build-chaos:
	$(GO) build -tags chaos -o $(BIN)/quorumq-chaos ./cmd/quorumq

## run: a single-node dev server with its data in ./data
run: build
	$(BIN)/quorumq serve --data-dir ./data

## cluster: three storage nodes (SHARDS Raft groups) on 127.0.0.1 with data in
## ./data/n1..3, and an API node on :8080/:9090; Ctrl-C stops them
# Ctrl-C reaches every process of the group; the trap also stops the nodes
# when only the shell is signalled (make forwards SIGTERM), waits for them
# to drain and exits quietly. It kills the nodes by pid, never `kill 0`: that
# signals the shell itself and re-enters the trap until bash crashes.
CLUSTER_PEERS := 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
SHARDS ?= 4
cluster: build
	@mkdir -p data
	@bash -c 'pids=; \
	stop() { trap - INT TERM; kill -TERM $$pids 2>/dev/null; wait; echo "cluster stopped"; exit 0; }; \
	trap stop INT TERM; \
	for i in 1 2 3; do \
	  $(BIN)/quorumq serve --node-id $$i --data-dir ./data/n$$i --shards $(SHARDS) \
	    --http-addr 127.0.0.1:808$$i --grpc-addr 127.0.0.1:909$$i --raft-addr 127.0.0.1:700$$i --metrics-addr 127.0.0.1:910$$i --sqs-addr 127.0.0.1:932$$i \
	    --peers $(CLUSTER_PEERS) 2>./data/n$$i.log & pids="$$pids $$!"; \
	done; \
	$(BIN)/quorumq serve --role api --node-id 100 --peers $(CLUSTER_PEERS) 2>./data/api.log & pids="$$pids $$!"; \
	echo "logs in ./data/n1.log ./data/n2.log ./data/n3.log ./data/api.log; Ctrl-C stops the cluster"; wait'

## bench: benchmark suite on a private three-node cluster (DURATION=15s BACKLOG=1000000 by default)
bench: build
	BIN=$(BIN)/quorumq $(GO) run ./bench

## bench-peers: quorumq side by side with NATS JetStream R3 and RabbitMQ quorum queues (3 local
## nodes each, same workload, one run) and one table of ratios; installs rabbitmq-server (apt) and
## nats-server (go install; NATS_SERVER=path uses a prebuilt one). Not part of `make test`.
PEERS_SRC   ?= ../shared/peers
NATS_SERVER ?=
bench-peers: build
	@command -v rabbitmq-server >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server bc; }
	@set -e; D=$$(mktemp -d); trap 'rm -rf "$$D"' EXIT; P=$$D/peers; cp -r $(PEERS_SRC) $$P; chmod -R u+w $$P; mkdir -p $$P/bin; \
	if [ -n "$(NATS_SERVER)" ]; then cp $(NATS_SERVER) $$P/bin/nats-server; \
	else GOBIN=$$P/bin $(GO) install github.com/nats-io/nats-server/v2@latest; fi; \
	(cd $$P/rmqbench && $(GO) build -o rmqbench .); (cd $$P/natsbench && $(GO) build -o natsbench .); \
	$(GO) run ./bench/peers -peers $$P -bin $(BIN)/quorumq

## test: everything CI checks (.ci/run calls exactly this)
test: check-generated lint test-race test-unit test-fuzz test-e2e test-ts test-deploy test-ui

# Each fuzz target runs briefly beyond its committed seed corpus (the seeds
# also run in the plain test runs). FUZZTIME=1m for a longer hunt.
FUZZTIME ?= 3s
FUZZ_TARGETS := ./store:FuzzDecodeHandle ./server/shardserver:FuzzValidateMessage ./server/shardserver:FuzzDecodeReceiptHandle ./server/auth:FuzzAuthenticate ./sqs/sigv4:FuzzAuthenticate
test-fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) $${t%%:*} || exit 1; \
	done

test-race:
	$(GO) test -race -count=1 -timeout 10m $(RACE_PKGS)

test-unit:
	$(GO) test -count=1 -timeout 10m $$($(GO) list ./... | grep -v -e /store -e /raftnode -e /server -e /internal -e /sdk -e /sqs -e /tests)
	# raftnode's own tests use the two-instance layout (--state-without-wal); the node's default is one instance
	RAFTNODE_ONE_DB=1 $(GO) test -count=1 -timeout 10m ./raftnode/

## test-ts: the TypeScript client (sdk/typescript) against a live `quorumq serve`
TS_DIR   := sdk/typescript
TS_DEPS  := $(TS_DIR)/node_modules/.npm-ci-done
test-ts: build $(TS_DEPS)
	cd $(TS_DIR) && npm run --silent build && QUORUMQ_BIN=$(BIN)/quorumq npm test --silent

# npm ci (pinned by the committed lock) again whenever the lock changes.
$(TS_DEPS): $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund
	@touch $@

## test-ui: the web console (ui/) in Debian's chromium, driven by
## playwright-core, against real `quorumq serve` processes (one node with
## auth; a three-node cluster behind an API node). Screenshots go to
## UI_ARTIFACTS. Installs chromium when the machine has none.
UI_DIR       := ui
UI_DEPS      := $(UI_DIR)/node_modules/.npm-ci-done
UI_ARTIFACTS ?= $(CURDIR)/$(UI_DIR)/test-results
test-ui: build $(UI_DEPS)
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	cd $(UI_DIR) && QUORUMQ_BIN=$(BIN)/quorumq CHROMIUM=$$(command -v chromium) UI_ARTIFACTS=$(UI_ARTIFACTS) \
		timeout 300 npm test --silent

## ui-screenshots: retake the README's console screenshots (ui/docs): a node
## started as `make run` starts it (listeners on free ports), its overview
## while `quorumq bench --rate 1500` runs, then a dead-letter queue
ui-screenshots: build $(UI_DEPS)
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	cd $(UI_DIR) && QUORUMQ_BIN=$(BIN)/quorumq CHROMIUM=$$(command -v chromium) \
		timeout 240 node test/screenshots.mjs

$(UI_DEPS): $(UI_DIR)/package-lock.json
	cd $(UI_DIR) && npm ci --no-audit --no-fund
	@touch $@

## test-deploy: render deploy/kubernetes with kustomize and decode every object
## strictly (a module of its own: the Kubernetes libraries stay out of go.mod)
test-deploy:
	cd deploy/kubernetes/check && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...

## test-sqs: the README's "Use it from the AWS SDK / CLI" walkthrough with the
## aws CLI (Debian's awscli, installed when missing); slow, so not in `make test`
test-sqs: build
	@command -v aws >/dev/null || { apt-get update && apt-get install -y awscli; }
	QUORUMQ_BIN=$(BIN)/quorumq $(GO) test -tags sqscli -count=1 -timeout 10m -run '^TestReadmeSQSWalkthrough$$' ./tests/

test-e2e: build build-chaos
	QUORUMQ_BIN=$(BIN)/quorumq QUORUMQ_CHAOS_BIN=$(BIN)/quorumq-chaos $(GO) test -count=1 -timeout 10m ./tests/...

## chaos: randomized fault schedules against real processes (tests/chaos):
## CHAOS_RUNS schedules of CHAOS_DURATION of faults each; CHAOS_SEED=n
## replays one; CHAOS_NODES (3 or 5; default every fifth seed 5) and
## CHAOS_SHARDS (default: 4 for odd seeds, 1 for even) size the cluster; CHAOS_DIR keeps data and node logs;
## CHAOS_SERVE_FLAGS adds flags to every node (e.g. --state-without-wal).
CHAOS_RUNS     ?= 50
CHAOS_DURATION ?= 60s
CHAOS_TIMEOUT  ?= 4h
chaos: build build-chaos
	QUORUMQ_BIN=$(BIN)/quorumq QUORUMQ_CHAOS_BIN=$(BIN)/quorumq-chaos \
	CHAOS_RUNS=$(CHAOS_RUNS) CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$(CHAOS_SEED) CHAOS_BASE_SEED=$(CHAOS_BASE_SEED) \
	CHAOS_NODES=$(CHAOS_NODES) CHAOS_SHARDS=$(CHAOS_SHARDS) CHAOS_DIR=$(CHAOS_DIR) CHAOS_SERVE_FLAGS="$(CHAOS_SERVE_FLAGS)" \
	$(GO) test -tags chaos -count=1 -v -timeout $(CHAOS_TIMEOUT) -run '^TestChaos$$' ./tests/chaos

## test-topic-kill: issue 20's full count: 100,000 publishes to a 4-partition topic (3 subscribed queues,
## 2 groups of 3 `topic consume` members) on 3 nodes while one node and one member of each group are killed
## with kill -9 (make test runs 20,000).
TOPIC_KILL_MESSAGES ?= 100000
test-topic-kill: build
	QUORUMQ_BIN=$(BIN)/quorumq QUORUMQ_TOPIC_KILL_MESSAGES=$(TOPIC_KILL_MESSAGES) \
	$(GO) test -count=1 -v -timeout 20m -run '^TestTopicSurvivesKill9$$' ./tests

## tools: buf (npm) and the protoc plugins (go install) into ./bin
tools: $(BUF) $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(BIN)/npm @bufbuild/buf@$(BUF_VERSION)

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO_GRPC)
$(BIN)/protoc-gen-grpc-gateway:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GATEWAY)
$(BIN)/protoc-gen-openapiv2:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_OPENAPI)
$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install $(STATICCHECK)

## generate: lint the protos and regenerate Go, gateway, OpenAPI and TypeScript
## code, and the console's assets (ui/dist)
generate: tools $(TS_DEPS) $(UI_DEPS)
	$(BUF) lint
	$(BUF) generate --template buf.gen.yaml
	$(BUF) generate --template buf.gen.store.yaml
	$(BUF) generate --template buf.gen.raftnode.yaml
	rm -rf $(TS_DIR)/src/gen
	$(BUF) generate --template buf.gen.ts.yaml
	cd $(UI_DIR) && npm run --silent build

## check-generated: the committed generated code is what `make generate` writes
check-generated: generate
	@git diff --exit-code -- api openapi store/storepb raftnode/transportpb $(TS_DIR)/src/gen $(UI_DIR)/dist && \
		test -z "$$(git status --porcelain -- $(UI_DIR)/dist)" || \
		(git status --short -- $(UI_DIR)/dist; echo "generated code is stale: run 'make generate' and commit" >&2; exit 1)

lint: $(BIN)/staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1)
	$(GO) vet ./...
	$(BIN)/staticcheck ./...
	$(GO) vet -tags chaos ./server/node ./tests/chaos
	$(BIN)/staticcheck -tags chaos ./server/node ./tests/chaos

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) ./data

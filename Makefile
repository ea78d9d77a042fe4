# raftkv build.  `make` builds ./raftkv; `make test` installs what is missing,
# builds, and runs every test (unit, cluster, sanitizers); `make run` starts a
# local 3-node cluster.  See README.md.

CC      ?= cc
PKGS    := raft libuv libh2o jansson lmdb
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
           -Wno-missing-field-initializers -fno-strict-aliasing
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lssl -lcrypto
TEST_LIBS  := $(shell pkg-config --libs cmocka 2>/dev/null)

SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined

PYTEST  ?= /usr/bin/python3 -m pytest
PYTEST_ARGS ?= -q

SRCS     := $(sort $(wildcard src/*.c))
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
CLI_SRCS  := $(sort $(wildcard cli/*.c))
CLI_PKGS  := libcurl jansson

# Two build trees that never share objects: plain and sanitized.
B  := build
BA := build-asan

OBJS      := $(LIB_SRCS:src/%.c=$(B)/obj/%.o)
OBJS_ASAN := $(LIB_SRCS:src/%.c=$(BA)/obj/%.o)
UNITS      := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
UNITS_ASAN := $(UNIT_SRCS:tests/unit/%.c=$(BA)/tests/%)

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GITREV  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DEFS    := -DRAFTKV_VERSION='"$(VERSION)"' -DRAFTKV_GITREV='"$(GITREV)"'

.PHONY: all deps build asan unit unit-asan cluster cluster-asan check \
        check-asan test run clean test-faults test-faults-long fuzz-build \
        fuzz-regress fuzz bench bench-compare bench-smoke

all: raftkv raftkv-cli

raftkv: $(B)/raftkv
	cp $< $@.tmp && mv -f $@.tmp $@

raftkv-cli: $(B)/raftkv-cli
	cp $< $@.tmp && mv -f $@.tmp $@

# The command-line client: its own small program (cli/), libcurl + jansson.
$(B)/raftkv-cli: $(CLI_SRCS) $(wildcard cli/*.h) | $(B)/obj
	@echo "  LD   $@"
	$(Q)$(CC) $(CFLAGS) $(DEFS) $(shell pkg-config --cflags $(CLI_PKGS)) -o $@ \
	  $(CLI_SRCS) $(shell pkg-config --libs $(CLI_PKGS))

$(BA)/raftkv-cli: $(CLI_SRCS) $(wildcard cli/*.h) | $(BA)/obj
	@echo "  LD   $@"
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $(DEFS) $(shell pkg-config --cflags $(CLI_PKGS)) \
	  -o $@ $(CLI_SRCS) $(shell pkg-config --libs $(CLI_PKGS))

# V=1 shows the full commands.
Q := $(if $(V),,@)

$(B)/raftkv: $(B)/obj/main.o $(OBJS)
	@echo "  LD   $@"
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(BA)/raftkv: $(BA)/obj/main.o $(OBJS_ASAN)
	@echo "  LD   $@"
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(PKG_LIBS) -lm

$(B)/obj/%.o: src/%.c src/*.h | $(B)/obj
	@echo "  CC   $<"
	$(Q)$(CC) $(CFLAGS) $(DEFS) $(PKG_CFLAGS) -MMD -c -o $@ $<

$(BA)/obj/%.o: src/%.c src/*.h | $(BA)/obj
	@echo "  CC   $< (asan)"
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $(DEFS) $(PKG_CFLAGS) -c -o $@ $<

$(B)/tests/%: tests/unit/%.c $(OBJS) $(wildcard tests/unit/*.h) | $(B)/tests
	@echo "  LD   $@"
	$(Q)$(CC) $(CFLAGS) $(DEFS) $(PKG_CFLAGS) -Isrc -o $@ $< $(OBJS) $(PKG_LIBS) $(TEST_LIBS) -lm

$(BA)/tests/%: tests/unit/%.c $(OBJS_ASAN) $(wildcard tests/unit/*.h) | $(BA)/tests
	@echo "  LD   $@"
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $(DEFS) $(PKG_CFLAGS) -Isrc -o $@ $< $(OBJS_ASAN) $(PKG_LIBS) $(TEST_LIBS) -lm

$(B)/obj $(BA)/obj $(B)/tests $(BA)/tests:
	mkdir -p $@

deps:
	@sh scripts/deps.sh

build: raftkv
asan: $(BA)/raftkv

unit: $(UNITS)
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

unit-asan: $(UNITS_ASAN)
	@set -e; for t in $(UNITS_ASAN); do echo "== $$t"; \
	  ASAN_OPTIONS=detect_leaks=1 $$t; done

cluster: raftkv raftkv-cli
	RAFTKV_BIN=$(CURDIR)/raftkv RAFTKV_CLI=$(CURDIR)/raftkv-cli \
	  $(PYTEST) $(PYTEST_ARGS) tests/cluster

cluster-asan: $(BA)/raftkv $(BA)/raftkv-cli
	RAFTKV_BIN=$(CURDIR)/$(BA)/raftkv RAFTKV_CLI=$(CURDIR)/$(BA)/raftkv-cli \
	  RAFTKV_SANITIZED=1 $(PYTEST) $(PYTEST_ARGS) tests/cluster

# Fault injection (tests/faults, run as root): nodes in network namespaces,
# partitions, crashes, pauses, disk faults, clock jumps, membership changes,
# with a linearizability checker.  Short seeded run here; the long one runs
# for DURATION seconds in ROUND-second rounds with fresh seeds (SEED=N to
# replay).
FAULTS_SHIM := $(B)/diskfault.so
DURATION ?= 600
ROUND ?= 120

$(FAULTS_SHIM): tests/faults/shim/diskfault.c | $(B)/obj
	@echo "  LD   $@"
	$(Q)$(CC) -O2 -g -std=c11 -Wall -Wextra -Werror -shared \
	  -fPIC -o $@ $< -ldl

test-faults: raftkv $(FAULTS_SHIM)
	RAFTKV_BIN=$(CURDIR)/raftkv FAULTS_SHIM=$(CURDIR)/$(FAULTS_SHIM) \
	  $(PYTEST) $(PYTEST_ARGS) tests/faults

test-faults-long: raftkv $(FAULTS_SHIM)
	RAFTKV_BIN=$(CURDIR)/raftkv FAULTS_SHIM=$(CURDIR)/$(FAULTS_SHIM) \
	  FAULTS_MODE=long FAULTS_DURATION=$(DURATION) FAULTS_ROUND=$(ROUND) \
	  $(if $(SEED),FAULTS_SEED=$(SEED)) \
	  $(PYTEST) $(PYTEST_ARGS) tests/faults/test_faults.py -k long

# libFuzzer targets (fuzz/, clang): the Raft log decoder and state machine,
# and whole HTTP requests against an in-process node.  fuzz-regress replays
# the corpus and every crasher ever found; fuzz runs each target for
# FUZZ_SECONDS and keeps new crashers under fuzz/regressions/.
FUZZ_SECONDS ?= 30

fuzz-build:
	$(MAKE) -C fuzz build

fuzz-regress:
	sh fuzz/regress.sh

fuzz:
	sh fuzz/run.sh $(FUZZ_SECONDS)

check: unit cluster
check-asan: unit-asan cluster-asan

# The one command that runs everything: install, build, test plain and sanitized.
test: deps
	$(MAKE) check
	$(MAKE) check-asan
	$(MAKE) fuzz-regress
	$(MAKE) fuzz
	$(MAKE) test-faults
	$(MAKE) bench-smoke

# Benchmarks (bench/README.md): numbers, never pass/fail.  bench-smoke is
# the ~10 s run `make test` does so that the harness cannot rot.
BENCH_ARGS ?=
bench: deps raftkv $(B)/bench/lookup
	/usr/bin/python3 bench/run.py $(BENCH_ARGS)

bench-compare: deps raftkv $(B)/bench/lookup
	@sh scripts/deps.sh compare
	/usr/bin/python3 bench/run.py --compare $(BENCH_ARGS)

bench-smoke: raftkv $(B)/bench/lookup
	/usr/bin/python3 bench/run.py --smoke

# One LMDB lookup, timed apart from HTTP (bench/lookup.c).
$(B)/bench/lookup: bench/lookup.c
	@mkdir -p $(@D)
	@echo "  LD   $@"
	$(Q)$(CC) $(CFLAGS) $(shell pkg-config --cflags lmdb) -o $@ $< \
	  $(shell pkg-config --libs lmdb)

run: deps
	$(MAKE) raftkv
	sh scripts/run-cluster.sh

clean:
	rm -rf $(B) $(BA) raftkv raftkv-cli
	$(MAKE) -C fuzz clean

-include $(B)/obj/*.d

# gpuq - see README.md.  `make` builds bin/gpuqd and bin/gpuq.
PKGS      := libevent libevent_pthreads jansson sqlite3 inih libsystemd libcurl \
             sndfile samplerate openssl
CC        ?= cc
OPT       ?= -O2
SAN       ?=
CFLAGS    += -std=c17 $(OPT) -g -Wall -Wextra -Werror -Wformat=2 \
             -Wshadow -Wno-unused-parameter -D_GNU_SOURCE -pthread $(SAN)
LDFLAGS   += $(SAN)
PKGCFLAGS  = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKGLIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS    += $(PKGLIBS) -lm -pthread
B         ?= build
BIN       ?= bin

CORE_SRC   := $(wildcard src/core/*.c)
STORE_SRC  := $(wildcard src/store/*.c)
EXEC_SRC   := $(wildcard src/exec/*.c)
SERVER_SRC := $(filter-out src/server/main.c,$(wildcard src/server/*.c))
CLI_SRC    := $(wildcard src/cli/*.c)

obj = $(patsubst src/%.c,$(B)/%.o,$(1))
CORE_OBJ   := $(call obj,$(CORE_SRC))
STORE_OBJ  := $(call obj,$(STORE_SRC))
EXEC_OBJ   := $(call obj,$(EXEC_SRC))
SERVER_OBJ := $(call obj,$(SERVER_SRC))
CLI_OBJ    := $(call obj,$(CLI_SRC))

UNIT_TESTS := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/test_*.c))
BENCH_BIN  := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))

.PHONY: all deps test-deps bench-deps test unit integration run bench asan clean fmt
all: deps $(BIN)/gpuqd $(BIN)/gpuq

deps:
	@scripts/deps.sh build
test-deps:
	@scripts/deps.sh test
bench-deps:
	@scripts/deps.sh bench

$(B)/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKGCFLAGS) -MMD -MP -c -o $@ $<

$(BIN)/gpuqd: $(B)/server/main.o $(SERVER_OBJ) $(EXEC_OBJ) $(STORE_OBJ) $(CORE_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BIN)/gpuq: $(CLI_OBJ) $(CORE_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(B)/tests/%: tests/%.c $(SERVER_OBJ) $(EXEC_OBJ) $(STORE_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKGCFLAGS) -Isrc -o $@ $^ $(LDFLAGS) $(LDLIBS) -lcmocka

$(B)/bench/%: bench/%.c bench/lib/benchlib.c $(SERVER_OBJ) $(EXEC_OBJ) $(STORE_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKGCFLAGS) -Isrc -o $@ $(filter-out bench/lib/%,$^) $(LDFLAGS) $(LDLIBS)

# Unit tests (cmocka, one process each) then integration tests (the real
# daemon on 127.0.0.1 port 0, driven over HTTP by Python's stdlib).
test: test-deps all $(UNIT_TESTS)
	@tests/run.sh $(B) $(BIN)

unit: test-deps all $(UNIT_TESTS)
	@tests/run.sh --unit $(B) $(BIN)

integration: test-deps all
	@tests/run.sh --integration $(B) $(BIN)

run: all
	@mkdir -p var
	$(BIN)/gpuqd --data var $(ARGS)

bench: bench-deps all $(BENCH_BIN)
	@bench/run.sh $(B) $(BIN)

# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer,
# in its own build tree.
asan:
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(MAKE) test B=build/asan BIN=build/asan/bin OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

fmt:
	clang-format -i src/*/*.c src/*/*.h tests/*.c bench/*.c

clean:
	rm -rf build bin

-include $(shell find $(B) -name '*.d' 2>/dev/null)

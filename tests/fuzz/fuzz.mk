# tests/fuzz/fuzz.mk - the libFuzzer targets (tests/fuzz/README), included
# by the top Makefile.
#
#   make fuzz         builds each target with clang (libFuzzer, ASan,
#                     UBSan) in build/fuzz and runs it for FUZZ_TIME
#                     seconds on a copy of its seeds; fails on a crash
#   make fuzz-replay  replays the seeds and crash reproducers with $(CC)
#
# The replay binaries, $(B)/tests/test_fuzz_NAME, are unit tests as well:
# `make test`, `make unit` and `make asan` build them, and tests/run.sh
# runs them from the repository root, where they find their inputs.

FUZZ_NAMES   := http config audio parse
FUZZ_TIME    ?= 60
FUZZ_B       ?= build/fuzz
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
FUZZ_REPLAY  := $(patsubst %,$(B)/tests/test_fuzz_%,$(FUZZ_NAMES))
FUZZ_OBJ      = $(SERVER_OBJ) $(EXEC_OBJ) $(STORE_OBJ) $(CORE_OBJ)

.PHONY: fuzz fuzz-deps fuzz-bins fuzz-replay fuzz-clean

# Each harness and each target's replay main are objects of their own,
# so that -MMD records the headers they include.
$(B)/tests/fuzz/fuzz_%.o: tests/fuzz/fuzz_%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKGCFLAGS) -Isrc -MMD -MP -c -o $@ $<

$(B)/tests/fuzz/replay_%.o: tests/fuzz/replay.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFUZZ_NAME='"$*"' -MMD -MP -c -o $@ $<

.SECONDARY: $(patsubst %,$(B)/tests/fuzz/fuzz_%.o,$(FUZZ_NAMES)) \
            $(patsubst %,$(B)/tests/fuzz/replay_%.o,$(FUZZ_NAMES))

# Replay: the target's LLVMFuzzerTestOneInput under replay.c's main,
# built like any unit test.
$(B)/tests/test_fuzz_%: $(B)/tests/fuzz/fuzz_%.o $(B)/tests/fuzz/replay_%.o \
                       $(FUZZ_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

test unit: $(FUZZ_REPLAY)

fuzz-replay: deps $(FUZZ_REPLAY)
	@for t in $(FUZZ_REPLAY); do echo "== $$t"; $$t || exit 1; done

# libFuzzer: the sources are compiled again by clang in $(FUZZ_B)/obj
# (a make of its own, with the instrumentation in SAN), then each target
# is linked with libFuzzer's main.  tests/fuzz/run.sh runs them.
fuzz-deps:
	@scripts/deps.sh fuzz

fuzz: fuzz-deps
	$(MAKE) --no-print-directory fuzz-bins B=$(FUZZ_B)/obj CC=$(FUZZ_CC) \
	  OPT=-O1 SAN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)"
	tests/fuzz/run.sh $(FUZZ_B) $(FUZZ_TIME) $(FUZZ_NAMES)

fuzz-bins: $(patsubst %,$(FUZZ_B)/fuzz_%,$(FUZZ_NAMES))

$(FUZZ_B)/fuzz_%: $(B)/tests/fuzz/fuzz_%.o $(FUZZ_OBJ)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDFLAGS) $(LDLIBS)

fuzz-clean:
	rm -rf $(FUZZ_B)

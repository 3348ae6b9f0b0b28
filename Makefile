# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DB_URL ?= sqlite:///cmvtrial.db
PROTOCOL ?= sle-cmv-il2
# The demo administrator's password; set CMVTRIAL_ADMIN_PASSWORD to choose your own.
export CMVTRIAL_ADMIN_PASSWORD ?= demo-admin-passphrase

.PHONY: install test run docs clean help

help:
	@echo "make run    build the environment, initialise the demo trial in cmvtrial.db, print the demo accounts and serve the web app on 127.0.0.1:8000"
	@echo "make test   build the environment and run every test"
	@echo "make docs   regenerate docs/cli-reference.md from the commands' help"
	@echo "make clean  remove the environment and the demo database"

install: $(STAMP)

# Re-installs only when pyproject.toml or the lock changes; otherwise a no-op. The exact versions
# (and their SHA-256 hashes) come from requirements.lock, so a fresh clone gets what was tested;
# docs/security.md says how to regenerate it after changing a dependency.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

# The browser test drives Debian's Chromium (never a downloaded browser). Installed here when
# missing; apt-get needs root (CI runs as root; elsewhere run `sudo apt-get install -y chromium`).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "Debian's chromium is missing and installing it needs root: sudo apt-get install -y chromium"; exit 1; fi
	apt-get update -qq && apt-get install -y -qq chromium

test: install $(CHROMIUM)
	$(BIN)/python -m pytest

HOST ?= 127.0.0.1
PORT ?= 8000

# Demo passwords are printed once, when the demo is first created (they are stored only as hashes);
# `make clean` starts over with new ones. The first run also enters a virtual trial of DEMO_SUBJECTS
# randomized subjects through the real services (default 16, about 30 s; `make run DEMO_SUBJECTS=100`
# takes about 2.5 min, mostly the investigators' password checks at signing); later runs keep it.
run: install
	$(BIN)/cmvtrial init --protocol $(PROTOCOL) --db $(DB_URL) --demo --if-missing
	$(BIN)/cmvtrial simulate trial --protocol $(PROTOCOL) --db $(DB_URL) --if-empty --n $(or $(DEMO_SUBJECTS),16)
	$(BIN)/cmvtrial status --db $(DB_URL)
	$(BIN)/cmvtrial user list --db $(DB_URL)
	@echo "Sign in at http://$(HOST):$(PORT)/ as admin with CMVTRIAL_ADMIN_PASSWORD (default demo-admin-passphrase),"
	@echo "or as a demo user with the password printed when the demo was created."
	$(BIN)/cmvtrial serve --db $(DB_URL) --host $(HOST) --port $(PORT)

# Regenerates the CLI reference from the commands' own help (a test checks it is current).
docs: install
	$(BIN)/python -m cmvtrial.adapters.cli.reference > docs/cli-reference.md

clean:
	rm -rf $(VENV) cmvtrial.db cmvtrial.db-wal cmvtrial.db-shm

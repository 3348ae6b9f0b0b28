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
	@echo "make run    build the environment, initialise the demo trial in cmvtrial.db and show its status"
	@echo "make test   build the environment and run every test"
	@echo "make docs   regenerate docs/cli-reference.md from the commands' help"
	@echo "make clean  remove the environment and the demo database"

install: $(STAMP)

# Re-installs only when pyproject.toml changes; otherwise a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

run: install
	$(BIN)/cmvtrial init --protocol $(PROTOCOL) --db $(DB_URL) --demo --if-missing
	$(BIN)/cmvtrial status --db $(DB_URL)

# Regenerates the CLI reference from the commands' own help (a test checks it is current).
docs: install
	$(BIN)/python -m cmvtrial.adapters.cli.reference > docs/cli-reference.md

clean:
	rm -rf $(VENV) cmvtrial.db cmvtrial.db-wal cmvtrial.db-shm

"""`cmvtrial init | status | site | user | audit` end to end through the CLI (Typer's CliRunner)."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from cli_support import ADMIN_PASSWORD as PASSWORD
from cli_support import cli, init_trial, one_line_error
from sqlalchemy import create_engine, make_url, text

USER_PASSWORD = "cli-user-passphrase"


@pytest.fixture
def initialised(database_url, protocol_id) -> str:
    return init_trial(database_url, protocol_id)


def test_init_takes_the_password_from_the_environment(database_url, protocol_id):
    result = cli("init", "--protocol", protocol_id, "--db", database_url, CMVTRIAL_ADMIN_PASSWORD=PASSWORD)
    assert result.exit_code == 0, result.output
    assert f"for protocol {protocol_id} version" in result.stdout and "administrator 'admin' created" in result.stdout
    verified = cli("audit", "verify", "--db", database_url)
    assert verified.exit_code == 0
    assert re.fullmatch(r"Audit trail intact: 3 events verified; newest hash [0-9a-f]{64}\.", verified.stdout.strip())


def test_init_asks_for_the_password_twice_without_the_environment(database_url, protocol_id):
    result = cli("init", "--protocol", protocol_id, "--db", database_url, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Password for the administrator 'admin'" in result.output


def test_init_without_any_password_explains_itself(database_url, protocol_id):
    result = cli("init", "--protocol", protocol_id, "--db", database_url, input="")
    assert "no password given" in one_line_error(result, "invalid_input", exit_code=2)


def test_init_with_a_weak_password_creates_nothing(tmp_path, protocol_id):
    url = f"sqlite:///{tmp_path / 'trial.db'}"
    result = cli("init", "--protocol", protocol_id, "--db", url, CMVTRIAL_ADMIN_PASSWORD="short")
    assert "at least 12 characters" in one_line_error(result, "invalid_input", exit_code=2)
    assert not (tmp_path / "trial.db").exists()


def test_init_refuses_an_unknown_protocol(database_url):
    result = cli("init", "--protocol", "no-such-trial", "--db", database_url, CMVTRIAL_ADMIN_PASSWORD=PASSWORD)
    assert "no-such-trial" in one_line_error(result, "not_found")


def test_init_twice_is_refused_unless_if_missing(initialised, protocol_id):
    again = cli("init", "--protocol", protocol_id, "--db", initialised, CMVTRIAL_ADMIN_PASSWORD=PASSWORD)
    assert "nothing was changed" in one_line_error(again, "already_initialised")
    quiet = cli("init", "--protocol", protocol_id, "--db", initialised, "--if-missing")
    assert quiet.exit_code == 0 and "already initialised; nothing to do" in quiet.stdout


def test_init_demo_adds_the_demo_site_and_prints_the_passwords(database_url, protocol_id):
    result = cli("init", "--protocol", protocol_id, "--db", database_url, "--demo", CMVTRIAL_ADMIN_PASSWORD=PASSWORD)
    assert result.exit_code == 0, result.output
    for role in ("investigator", "coordinator", "monitor", "data-manager", "statistician"):
        assert f"demo-{role}" in result.stdout
    assert "PKUPH" in cli("site", "list", "--db", database_url).stdout


def test_status_summarises_the_trial(initialised, protocol_id):
    result = cli("status", "--db", initialised)
    assert result.exit_code == 0, result.output
    assert f"Protocol:  {protocol_id} version" in result.stdout
    assert "Audit trail: 3 events" in result.stdout


def test_sites_and_users_are_added_and_listed(initialised):
    added = cli("site", "add", "pkuph", "Peking University People's Hospital", "--db", initialised)
    assert (added.exit_code, added.stdout.strip()) == (0, "Site PKUPH (Peking University People's Hospital) added.")
    user = cli(
        "user", "add", "ivy", "--role", "investigator", "--site", "PKUPH", "--db", initialised,
        CMVTRIAL_USER_PASSWORD=USER_PASSWORD,
    )
    assert (user.exit_code, user.stdout.strip()) == (0, "User ivy (investigator, site PKUPH) added.")
    prompted = cli("user", "add", "stan", "--role", "statistician", "--db", initialised, input=f"{USER_PASSWORD}\n" * 2)
    assert prompted.exit_code == 0 and "User stan (statistician, all sites) added." in prompted.stdout
    listing = cli("user", "list", "--db", initialised).stdout
    assert all(name in listing for name in ("admin", "ivy", "stan"))
    assert "$argon2" not in listing
    log = cli("audit", "log", "--limit", "3", "--json", "--db", initialised)
    assert [event["action"] for event in json.loads(log.stdout)] == ["user.create", "user.create", "site.create"]
    assert "site.create" in cli("audit", "log", "--db", initialised).stdout


def test_bad_user_input_exits_2_and_unknown_site_exits_1(initialised):
    env = {"CMVTRIAL_USER_PASSWORD": USER_PASSWORD}
    one_line_error(cli("user", "add", "ivy", "--role", "nurse", "--db", initialised, **env), "invalid_input", 2)
    one_line_error(cli("user", "add", "ivy", "--role", "monitor", "--site", "NOPE", "--db", initialised, **env), "not_found")
    short = cli("user", "add", "ivy", "--role", "monitor", "--db", initialised, CMVTRIAL_USER_PASSWORD="short")
    one_line_error(short, "invalid_input", 2)


def test_acting_as_a_user_without_the_right_is_forbidden(initialised):
    cli("user", "add", "stan", "--role", "statistician", "--db", initialised, CMVTRIAL_USER_PASSWORD=USER_PASSWORD)
    refused = cli("site", "add", "XX", "Nope", "--as", "stan", "--db", initialised)
    assert "may not site.add" in one_line_error(refused, "forbidden")
    one_line_error(cli("site", "list", "--as", "ghost", "--db", initialised), "not_found")


@pytest.mark.parametrize("url", ["nonsense", "mysql://user@host/trial", "sqlite+nodriver:///x.db"])
def test_a_wrong_database_url_gets_one_line(url):
    one_line_error(cli("status", "--db", url), "database_url_invalid")


def test_an_unreachable_server_gets_one_line():
    url = "postgresql+psycopg://nobody@127.0.0.1:1/trial?connect_timeout=2"
    one_line_error(cli("status", "--db", url), "database_unavailable")


def test_an_unmigrated_database_gets_one_line(database_url, tmp_path):
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert "cmvtrial init" in one_line_error(cli("status", "--db", missing), "database_not_initialised")
    assert not (tmp_path / "missing.db").exists()
    engine = create_engine(database_url)  # an existing database with nothing in it
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()
    for command in (["status"], ["audit", "verify"], ["site", "list"]):
        assert "cmvtrial init" in one_line_error(cli(*command, "--db", database_url), "database_not_initialised")


def test_a_locked_database_gets_one_line(tmp_path, protocol_id):
    url = f"sqlite:///{tmp_path / 'trial.db'}"
    assert cli("init", "--protocol", protocol_id, "--db", url, CMVTRIAL_ADMIN_PASSWORD=PASSWORD).exit_code == 0
    blocker = sqlite3.connect(tmp_path / "trial.db")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        result = cli("site", "add", "LK", "Locked", "--db", url, CMVTRIAL_SQLITE_BUSY_TIMEOUT_MS="100")
        assert "locked" in one_line_error(result, "database_locked")
    finally:
        blocker.close()


def test_a_bad_setting_gets_one_line(initialised):
    result = cli("status", "--db", initialised, CMVTRIAL_SQLITE_BUSY_TIMEOUT_MS="soon")
    assert "CMVTRIAL_SQLITE_BUSY_TIMEOUT_MS" in one_line_error(result, "invalid_input", 2)


def test_audit_verify_names_the_first_broken_event(initialised):
    url = make_url(initialised)
    engine = create_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
        else:
            connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
        connection.execute(text("UPDATE audit_events SET reason = 'nothing happened' WHERE sequence = 2"))
    engine.dispose()
    result = cli("audit", "verify", "--db", initialised)
    line = one_line_error(result, "audit_chain_broken")
    assert "broken at event 2" in line and "altered" in line


def test_the_audit_log_limit_must_be_positive(initialised):
    assert cli("audit", "log", "--limit", "0", "--db", initialised).exit_code == 2


def test_help_lists_the_admin_commands():
    result = cli("--help")
    assert all(command in result.stdout for command in ("init", "status", "site", "user", "audit"))

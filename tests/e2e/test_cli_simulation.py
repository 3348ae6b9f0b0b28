"""`cmvtrial simulate trial` and `cmvtrial simulate power` through the real CLI (CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from cmvtrial.adapters.cli.main import app

CLEAN = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["simulate", *args], env=CLEAN, catch_exceptions=False)


def test_trial_json_is_seeded_and_complete():
    args = ("trial", "--protocol", "nct04225780", "--seed", "4", "--start-date", "2026-02-02", "--json")
    first, again = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout
    trial = json.loads(first.stdout)
    assert trial["protocol"] == "nct04225780" and trial["seed"] == 4 and trial["start_date"] == "2026-02-02"
    assert trial["summary"]["randomized"] == 10
    patient = next(c for c in trial["candidates"] if c["randomized"])
    assert set(patient["courses"]) == {"il2_gcv", "gcv"}


def test_trial_table_and_out_file(tmp_path):
    out = tmp_path / "trial.json"
    result = run("trial", "--protocol", "sle-cmv-il2", "--n", "20", "--start-date", "2026-02-02", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "20 randomized" in result.stdout and "Screen failures" in result.stdout
    assert json.loads(out.read_text())["summary"]["randomized"] == 20


def test_power_json_has_the_documented_shape():
    result = run("power", "--protocol", "nct04225780", "--scenario", "null", "--n-trials", "200", "--sizes", "5,20", "--seed", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"protocol", "scenario", "trials", "seed", "seconds", "results"} <= set(report)
    assert (report["protocol"], report["scenario"], report["trials"], report["seed"]) == ("nct04225780", "null", 200, 2)
    assert {(row["n_per_arm"], row["endpoint"], row["test"]) for row in report["results"]} == {
        (n, endpoint, test)
        for n in (5, 20)
        for endpoint, test in (
            ("viremia_duration", "logrank"), ("viremia_duration", "cox"), ("nk_change", "ancova"),
            ("cmv_decline", "mixed_model_two_stage"),
        )
    }
    assert all(0 <= row["power"] <= 1 and row["mc_se"] >= 0 for row in report["results"])


def test_power_with_workers_gives_the_same_numbers():
    args = ("power", "--protocol", "nct04225780", "--n-trials", "300", "--sizes", "6", "--json")
    one, two = run(*args), run(*args, "--workers", "2")
    assert one.exit_code == two.exit_code == 0, two.output
    assert json.loads(one.stdout)["results"] == json.loads(two.stdout)["results"]


def test_power_defaults_to_the_protocols_planned_size():
    result = run("power", "--protocol", "nct04225780", "--trials", "100", "--json")
    assert result.exit_code == 0, result.output
    assert {row["n_per_arm"] for row in json.loads(result.stdout)["results"]} == {5}


def test_power_table():
    result = run("power", "--protocol", "sle-cmv-il2", "--n-trials", "200", "--n-per-arm", "30")
    assert result.exit_code == 0, result.output
    assert "viremia_duration" in result.stdout and "Schoenfeld" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("power", "--protocol", "sle-cmv-il2", "--sizes", "40,abc"), 2, "--sizes must be whole numbers"),
        (("power", "--protocol", "sle-cmv-il2", "--sizes", "1"), 2, "between 2 and"),
        (("power", "--protocol", "sle-cmv-il2", "--n-trials", "0"), 2, "number of trials"),
        (("power", "--protocol", "sle-cmv-il2", "--workers", "0"), 2, "--workers must be"),
        (("power", "--protocol", "sle-cmv-il2", "--sizes", "40,40"), 2, "twice"),
        (("power", "--protocol", "sle-cmv-il2", "--scenario", "rosy"), 1, "no scenario 'rosy'"),
        (("trial", "--protocol", "no-such-trial"), 1, "no shipped protocol"),
        (("trial", "--protocol", "sle-cmv-il2", "--start-date", "02/03/2026"), 2, "ISO date"),
    ],
)
def test_bad_input_gets_one_line_and_the_right_exit_code(args, code, message):
    result = run(*args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.output


# --- simulate trial --db: the virtual trial through the services ------------------------------------


@pytest.fixture
def trial_db(tmp_path, monkeypatch):
    """A trial database made by `cmvtrial init` (no subjects yet)."""
    monkeypatch.setenv("CMVTRIAL_ADMIN_PASSWORD", "correct-horse-battery")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    made = CliRunner().invoke(app, ["init", "--protocol", "nct04225780", "--db", url], env=CLEAN)
    assert made.exit_code == 0, made.output
    return url


def test_trial_into_a_database_then_if_empty_does_nothing(trial_db):
    args = ("trial", "--protocol", "nct04225780", "--n", "3", "--db", trial_db, "--as-of", "2025-06-30", "--no-sign")
    loaded = run(*args, "--json")
    assert loaded.exit_code == 0, loaded.output
    result = json.loads(loaded.stdout)
    assert result["counts"]["randomized"] == 3 and result["skipped"] == [] and result["as_of"] == "2025-06-30"
    assert result["start_date"] < "2025-06-30" and {a["role"] for a in result["accounts"]} >= {"coordinator"}

    again = run(*args, "--if-empty")
    assert again.exit_code == 0 and "no demo data loaded" in again.stdout
    refused = run(*args)
    assert refused.exit_code == 1 and "already holds" in refused.stderr
    status = CliRunner().invoke(app, ["status", "--db", trial_db], env=CLEAN)
    assert "screen_failed" in status.stdout or "in_follow_up" in status.stdout


def test_trial_into_a_database_prints_what_was_entered(trial_db):
    result = run("trial", "--protocol", "nct04225780", "--n", "2", "--db", trial_db, "--start-date", "2025-01-06",
                 "--as-of", "2025-09-30")
    assert result.exit_code == 0, result.output
    assert "Entered through the services" in result.stdout and "signatures" in result.stdout
    assert "keep these passwords" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--as-of", "2025-01-01"), 2, "--as-of goes with --db"),
        (("--if-empty",), 2, "--if-empty goes with --db"),
        (("--no-sign",), 2, "--no-sign goes with --db"),
    ],
)
def test_database_options_need_a_database(args, code, message):
    result = run("trial", "--protocol", "nct04225780", "--n", "2", *args)
    assert result.exit_code == code and message in result.stderr


def test_trial_into_an_uninitialised_database_is_refused(tmp_path):
    result = run("trial", "--protocol", "nct04225780", "--n", "2", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 1 and "cmvtrial init" in result.stderr
    assert "Traceback" not in result.output


def test_trial_of_another_protocol_is_refused(trial_db):
    result = run("trial", "--protocol", "sle-cmv-il2", "--n", "2", "--db", trial_db)
    assert result.exit_code == 1 and "runs protocol nct04225780" in result.stderr


# --- simulate power on Dask, and the power curve ----------------------------------------------------


def test_power_on_a_running_dask_scheduler_gives_the_same_numbers():
    from distributed import LocalCluster

    from cmvtrial.simulation.power import LOCAL_CLUSTER_HTTP

    args = ("power", "--protocol", "nct04225780", "--n-trials", "1500", "--sizes", "6", "--json")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=LOCAL_CLUSTER_HTTP) as cluster:
        remote = run(*args, "--scheduler", cluster.scheduler_address)
    local = run(*args)
    assert remote.exit_code == local.exit_code == 0, remote.output
    assert json.loads(remote.stdout)["results"] == json.loads(local.stdout)["results"]


def test_power_with_an_unreachable_scheduler_says_so(monkeypatch):
    from cmvtrial.adapters.cli import simulation_commands

    monkeypatch.setattr(simulation_commands, "SCHEDULER_TIMEOUT_S", 1)
    result = run("power", "--protocol", "nct04225780", "--n-trials", "10", "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 1
    assert "cluster_unavailable" in result.stderr and "tcp://127.0.0.1:9" in result.stderr


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_power_plot_writes_the_curve(tmp_path, suffix):
    target = tmp_path / f"power.{suffix}"
    result = run("power", "--protocol", "nct04225780", "--n-trials", "100", "--sizes", "5,10", "--plot", str(target))
    assert result.exit_code == 0, result.output
    assert f"Wrote the power curve to {target}" in result.stdout
    assert target.read_bytes().startswith(b"\x89PNG" if suffix == "png" else b"<?xml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--plot", "curve.gif"), "--plot must name a .png, .svg or .pdf file"),
        (("--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"), "not both"),
        (("--processes", "0"), "--processes must be between 1 and 64"),
        (("--processes", "65"), "--processes must be between 1 and 64"),
        (("--processes", "2", "--workers", "2"), "give --processes (local processes) or --workers/--scheduler"),
        (("--processes", "1", "--workers", "1"), "give --processes (local processes) or --workers/--scheduler"),
        (("--processes", "2", "--scheduler", "tcp://127.0.0.1:8786"), "not both"),
    ],
)
def test_power_option_mistakes_are_refused_before_simulating(args, message, pools):
    result = run("power", "--protocol", "nct04225780", "--n-trials", "2000", "--sizes", "5,6", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.output
    assert pools == []  # nothing started


# --- simulate power over local processes (the default) -----------------------------------------------


@pytest.fixture
def pools(monkeypatch):
    """Records each local run's (processes asked for, blocks, whether a process pool runs them)."""
    from cmvtrial.adapters.cli import simulation_commands

    made: list[tuple[int, int, bool]] = []
    real = simulation_commands._process_pool

    def recording(stack, processes, blocks):
        mapper = real(stack, processes, blocks)
        made.append((processes, blocks, mapper is not None))
        return mapper

    monkeypatch.setattr(simulation_commands, "_process_pool", recording)
    return made


def test_power_in_one_or_two_processes_gives_the_same_json(pools):
    args = ("power", "--protocol", "nct04225780", "--n-trials", "1100", "--sizes", "5,8", "--seed", "3", "--json")
    one, two = run(*args, "--processes", "1"), run(*args, "--processes", "2")
    assert one.exit_code == two.exit_code == 0, two.output
    assert pools == [(1, 4, False), (2, 4, True)]  # 2 sizes x (1024 + 76 trials)
    first, second = json.loads(one.stdout), json.loads(two.stdout)
    assert first.pop("seconds") >= 0 and second.pop("seconds") >= 0
    assert first == second


def test_power_uses_every_available_cpu_by_default(pools, monkeypatch):
    from cmvtrial.adapters.cli import simulation_commands

    monkeypatch.setattr(simulation_commands, "available_cpus", lambda: 3)
    spread = run("power", "--protocol", "nct04225780", "--n-trials", "1100", "--sizes", "5", "--json")
    single_block = run("power", "--protocol", "nct04225780", "--n-trials", "200", "--sizes", "5", "--json")
    on_dask = run("power", "--protocol", "nct04225780", "--n-trials", "1100", "--sizes", "5", "--workers", "1", "--json")
    assert spread.exit_code == single_block.exit_code == on_dask.exit_code == 0, spread.output
    # min(3 processes, 2 blocks) share the first run; one block runs in-process; --workers is Dask's path
    assert pools == [(3, 2, True), (3, 1, False)]
    assert json.loads(spread.stdout)["results"] == json.loads(on_dask.stdout)["results"]


def test_power_progress_advances_block_by_block_from_the_pool(pools, monkeypatch):
    from rich.progress import Progress

    advanced: list[float] = []
    real = Progress.advance

    def advance(self, task, amount=1):
        advanced.append(amount)
        real(self, task, amount)

    monkeypatch.setattr(Progress, "advance", advance)
    result = run("power", "--protocol", "nct04225780", "--n-trials", "1100", "--sizes", "5,6", "--processes", "2")
    assert result.exit_code == 0, result.output
    assert pools == [(2, 4, True)] and advanced == [1024, 76, 1024, 76]


def test_ctrl_c_stops_the_run_and_its_worker_processes():
    """SIGINT to the command's process group, as a terminal's Ctrl-C sends it, while both workers run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    command = [sys.executable, "-c", "from cmvtrial.adapters.cli.main import run; run()", "simulate", "power",
               "--protocol", "nct04225780", "--n-trials", "5000000", "--sizes", "5", "--processes", "2", "--json"]
    leader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                              env={**os.environ, **CLEAN}, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while len(workers := psutil.Process(leader.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2, leader.stderr.read() if leader.poll() is not None else "no workers started"
        time.sleep(0.5)  # both at work
        os.killpg(leader.pid, signal.SIGINT)
        _out, err = leader.communicate(timeout=30)
    finally:
        if leader.poll() is None:  # pragma: no cover - only when the test fails
            os.killpg(leader.pid, signal.SIGKILL)
            leader.wait()
    assert leader.returncode != 0
    assert b"Traceback" not in err
    _gone, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []

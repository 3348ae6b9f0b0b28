"""Dependency hygiene (issue 10; ICH E6(R3) §4.3.3 "patching"): every dependency pinned, a lock file
with hashes that `make install` uses, the environment equal to the lock, and known vulnerabilities
checked with pip-audit.

pip-audit asks a vulnerability service about each locked version: PyPI's JSON API (the default) or
OSV. Where neither answers (this project's build machines reach PyPI's *simple* index only: the JSON
API answers 404 through the mirror and OSV is unreachable) pip-audit marks every package "could not
be audited" and finds nothing — so the test says how many it could audit, and always adds what PyPI's
simple index does tell: each locked version exists, each locked hash is one PyPI publishes for it
(the lock was not tampered with), and no locked file was yanked by its maintainers (PEP 592; yanks
are how broken or unsafe releases are withdrawn). docs/security.md "Dependencies" has the details.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]
LOCK = ROOT / "requirements.lock"
INDEX = "https://pypi.org/simple"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)")
RELOCK = ("python3 -m venv /tmp/lock && /tmp/lock/bin/pip install pip-tools==7.6.2 && /tmp/lock/bin/pip-compile "
          "--generate-hashes --allow-unsafe --strip-extras --extra test --no-emit-index-url --no-emit-find-links "
          "--output-file requirements.lock pyproject.toml")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, str]:
    """Every dependency pyproject.toml declares (runtime and test), as name -> pinned version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found: dict[str, str] = {}
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        match = PIN.match(requirement)
        assert match, f"'{requirement}' in pyproject.toml is not pinned with =="
        found[canonical(match.group(1))] = match.group(3)
    return found


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as name -> (version, sha256 hashes)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            current = canonical(match.group(1))
            entries[current] = (match.group(3), [])
        for digest in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
            assert current is not None
            entries[current][1].append(digest)
    return entries


def test_every_declared_dependency_is_pinned_and_locked_with_hashes():
    lock = locked()
    assert lock, "requirements.lock is empty"
    assert all(hashes for _, hashes in lock.values()), "a locked package without --hash lines"
    drift = {name: (version, lock.get(name, ("missing", []))[0]) for name, version in declared().items()
             if lock.get(name, ("missing", []))[0] != version}
    assert not drift, f"pyproject.toml and requirements.lock disagree {drift}; regenerate the lock: {RELOCK}"


def test_the_environment_is_exactly_the_lock():
    installed = {canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    differing = {name: (version, installed.get(name)) for name, (version, _) in locked().items()
                 if installed.get(name) != version}
    assert not differing, f"installed versions differ from requirements.lock (run `make install`): {differing}"


def test_make_install_installs_from_the_lock_with_hashes():
    recipe = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements.lock" in recipe
    assert re.search(r"^\$\(STAMP\):.*requirements\.lock", recipe, re.MULTILINE)


def test_pip_audit_finds_no_known_vulnerability_in_the_lock(tmp_path, record_property):
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--disable-pip", "--require-hashes", "-r", str(LOCK),
         "--vulnerability-service", "pypi", "--format", "json", "--progress-spinner", "off", "--timeout", "10",
         "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in report["dependencies"] if d.get("vulns")}
    assert not vulnerable, f"known vulnerabilities: {vulnerable}; upgrade, relock ({RELOCK}) and retest"
    audited = sum(1 for d in report["dependencies"] if "vulns" in d)
    record_property("pip_audit_audited", f"{audited} of {len(report['dependencies'])}")
    print(f"pip-audit audited {audited} of {len(report['dependencies'])} locked packages")


def _verify() -> ssl.SSLContext | bool:
    """The CA bundle pip itself uses here (PIP_CERT), else the system's, else httpx's own."""
    for bundle in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if bundle and Path(bundle).is_file():
            return ssl.create_default_context(cafile=bundle)
    return True


def _published(client: httpx.Client, name: str) -> dict[str, object]:
    response = client.get(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.timeout(180)
def test_pypi_publishes_every_locked_hash_and_none_is_yanked():
    lock = locked()
    with httpx.Client(timeout=30, verify=_verify(), follow_redirects=True) as client, ThreadPoolExecutor(8) as pool:
        pages = dict(zip(lock, pool.map(lambda name: _published(client, name), lock), strict=True))
    problems = []
    for name, (version, hashes) in lock.items():
        files = [f for f in pages[name]["files"]  # type: ignore[union-attr]
                 if _version_of(f["filename"], name) == version]
        published = {f["hashes"].get("sha256") for f in files}
        if not files:
            problems.append(f"{name}=={version} is not on PyPI")
        unknown = set(hashes) - published
        if unknown:
            problems.append(f"{name}=={version}: {len(unknown)} locked hash(es) PyPI does not publish")
        yanked = [f["filename"] for f in files if f.get("yanked") and f["hashes"].get("sha256") in hashes]
        if yanked:
            problems.append(f"{name}=={version} was yanked: {yanked[0]}")
    assert not problems, problems


def _version_of(filename: str, name: str) -> str | None:
    """The version in a wheel or sdist file name (names normalised as PyPI stores them)."""
    stem = re.sub(r"\.(whl|tar\.gz|zip|tar\.bz2)$", "", filename)
    parts = stem.split("-")
    for cut in range(1, len(parts)):
        if canonical("-".join(parts[:cut])) == name:
            return parts[cut]
    return None

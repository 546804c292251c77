"""discover reads names a target chose, and they stay data (issue 21, item 1): a real service whose working
directory is a path of shell payloads (a quote that ends a quoted word, `$(...)`, backticks, a line break, a
leading `-`), whose log's name holds the same, in an application tree whose policies directory, secret files and
keys are named likewise. Nothing runs, nothing is deleted, and the profile holds each name exactly.

Before, the names were quoted but read back split at white space (`find ... -print`, `%l\\n`, readlink's output
stripped): a log whose name held a line break was lost, a secret file `prod\\n-delete.env` became two, one of them
the relative `-delete.env`, and a policies directory under `a b/` became `b/policies`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
import yaml

from acgs_verify.discover import find
from acgs_verify.profile import Host, load_profile
from tests.conftest import host_services_lock, run_cli
from tests.servers import server
from tests.test_discover import _listens, recording_discoveries
from tests.test_profile_values_are_data import DASH, payloads, ran
from tests.tlsserver import make_ca_and_cert

HASH = "cdd01ef066bc6cf2"
APP = f'''
import json
BODY = json.dumps({{"status": "ok", "service": "names", "constitutional_hash": "{HASH}"}}).encode()

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    ok = scope["path"] == "/health"
    await send({{"type": "http.response.start", "status": 200 if ok else 404,
                "headers": [(b"content-type", b"application/json")]}})
    await send({{"type": "http.response.body", "body": BODY if ok else b"{{}}"}})
'''


def _bait(directory: Path) -> Path:
    """A file in a directory named DASH under `directory`: a name that reached find as an action deletes it."""
    bait = directory / DASH / "bait"
    bait.parent.mkdir(parents=True, exist_ok=True)
    bait.write_text("still here\n")
    return bait


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The service, its hostile application tree and log, and the bait files a `-delete` would remove."""
    work = tmp_path_factory.mktemp("names")
    markers = work / "markers"
    markers.mkdir()
    values = payloads(markers)
    # every payload a component (or, holding '/', several) of the path; the line break's ends the path, so a
    # stripped readlink output names another directory
    app = Path(work, values["dash"], values["quote"], values["subshell"], values["backtick"], values["newline"])
    (app / "config").mkdir(parents=True)
    (app / "names_app.py").write_text(APP)
    policies = app / "config" / f"a b\n{DASH}" / "policies"
    policies.mkdir(parents=True)
    secrets = [app / "config" / f"prod\n{DASH}.env", app / "config" / f"{values['quote']}.env".replace("/", "_"),
               app / "config" / "-rf.key", app / "config" / " spaced credentials "]
    for f in secrets:
        f.write_text("not read by discover\n")
    (app / "config" / "-rf.rotated").write_text("2026-12-01\n")
    log = Path(app, "logs", f"{DASH}\n{values['subshell']}.log")
    log.parent.mkdir(parents=True)
    baits = [_bait(app), _bait(app / "config"), _bait(work)]
    # a certificate its environment names relative to its working directory, by a name that is an option to head
    _, chain, _ = make_ca_and_cert(work)
    (app / f"{DASH}.pem").write_bytes(chain.read_bytes())

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "names_app:app", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning"]

    # the tree is files alone: the host's services lock is taken for the service
    with host_services_lock(), server("the service in a hostile tree", argv, _listens, log, timeout=15, cwd=app,
                                      env={"PATH": "/usr/bin:/bin", "HOME": str(work),
                                           "ACGS_TLS_CERT": f"{DASH}.pem"}) as (port, proc):
        yield {"port": port, "pid": proc.pid, "app": app, "log": log, "policies": policies, "work": work,
               "secrets": sorted(str(f) for f in secrets), "markers": markers, "baits": baits}


def _nothing_ran(tree) -> None:
    assert ran(tree["markers"]) == [], f"payloads ran: {ran(tree['markers'])}"
    assert all(b.exists() for b in tree["baits"]), f"{DASH} reached find as an action"


@pytest.fixture(scope="module")
def whole_host(tree):
    """One `acgs-verify discover` of the whole host, in the tree's work folder (the local backend's commands run
    there, beside a bait): (what it found, the profile it wrote). The tests that read the service's names from a
    whole-host discover read this one run: the host they read is the same."""
    out = tree["work"] / "cli.yaml"
    with recording_discoveries() as seen:
        res = run_cli("discover", "--name", "app-1", "-o", str(out), "--force", cwd=tree["work"], timeout=120)
    assert res.returncode == 0, res.stderr
    (found,) = seen
    return found, out


def test_a_service_in_a_hostile_tree_is_discovered_by_its_exact_names(tree, whole_host):
    found, out = whole_host
    _nothing_ran(tree)
    (mine,) = [s for s in found.services if s.data["port"] == tree["port"]]
    assert mine.data["log"] == str(tree["log"]), mine.data
    # the profile written from it holds the log's name as data, and loads
    profile = load_profile(str(out), resolve_secrets=False)
    assert [s.log for s in profile.services if s.port == tree["port"]] == [str(tree["log"])]
    _nothing_ran(tree)


def test_discover_writes_a_hostile_tree_as_data(tree, whole_host):
    _, out = whole_host
    _nothing_ran(tree)
    (mine,) = [s for s in yaml.safe_load(out.read_text())["services"] if s["port"] == tree["port"]]
    assert mine["log"] == str(tree["log"])


@pytest.fixture(scope="module")
def one_service_found(tree):
    """discover over the one service's port alone, so that the other stacks on this shared machine do not move the
    application tree elsewhere; run in the tree's work folder, beside a bait. Read by every test below: one scope,
    one host, one discover."""
    with contextlib.chdir(tree["work"]):
        found = find(Host(name="app-1"), ports={tree["port"]})
    assert [s.data["port"] for s in found.services] == [tree["port"]]
    _nothing_ran(tree)
    return found


def test_an_application_tree_is_read_by_its_exact_names(tree, one_service_found):
    found = one_service_found
    paths, security = found.paths, found.security
    assert paths["app_root"].data["value"] == str(tree["app"])
    assert paths["policies"].data["value"] == str(tree["policies"])
    assert security["secret_files"].data["value"] == tree["secrets"]
    keys = {k["path"]: k for k in security["keys"].data["value"]}
    rf = str(tree["app"] / "config" / "-rf.key")
    assert keys[rf]["rotation_record"] == str(tree["app"] / "config" / "-rf.rotated"), keys
    assert set(keys) == {rf, str(tree["app"] / "config" / " spaced credentials ")}
    mount = os.path.realpath(tree["work"])
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    assert found.host.data["mounts"] == list(dict.fromkeys(["/", mount]))


def test_a_relative_path_in_a_services_environment_is_read_where_the_service_reads_it(tree, one_service_found):
    """ACGS_TLS_CERT=-delete.pem: the file in the service's working directory, read as a file (not head's
    option), and written as its absolute path; before, head was handed `-delete.pem` in discover's own
    directory and the certificate was not found."""
    paths = [c.data["path"] for c in one_service_found.certificates]
    assert str(tree["app"] / f"{DASH}.pem") in paths, paths

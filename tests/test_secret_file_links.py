"""SEC-02 on a secret file the profile names through a symlink: the link's own mode is always 0777, so the file it
reaches is judged (its mode and owner), and the message says it was reached through the link; a link to nothing is
a finding, never "mode 0777" and never "does not exist" alone. On the local backend and over ssh.
"""

from __future__ import annotations

import getpass
import json
import os

import pytest

from acgs_verify.hosts.pool import HostPool
from acgs_verify.probes import security
from acgs_verify.profile import Host
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.conftest import run_cli
from tests.servers import lone_sshd

ADDRESS = "127.0.0.3"


def _plant(root):
    """private.env 0600, open.env 0644, each reached through a link; a link to nothing; a plain private file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "real").mkdir()
    for name, mode in (("private.env", 0o600), ("open.env", 0o644), ("plain.env", 0o600)):
        (root / "real" / name).write_text("X=1\n")
        (root / "real" / name).chmod(mode)
    (root / "private-link.env").symlink_to(root / "real" / "private.env")
    (root / "open-link.env").symlink_to("real/open.env")  # relative, as ln -s writes it
    (root / "dangling.env").symlink_to(root / "real" / "gone.env")
    return {"private": str(root / "private-link.env"), "open": str(root / "open-link.env"),
            "dangling": str(root / "dangling.env"), "plain": str(root / "real" / "plain.env"),
            "missing": str(root / "missing.env")}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if sshd_binary() is None:
        yield None
        return
    with lone_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS) as (_, host):
        yield Host.model_validate(host)


@pytest.mark.parametrize("backend", ["local", "ssh"])
def test_a_linked_secret_is_stat_through_its_link_and_a_dangling_one_says_so(tmp_path, sshd, backend):
    if backend == "ssh" and sshd is None:
        pytest.skip("sshd (openssh-server) is not installed")
    paths = _plant(tmp_path / "cfg")
    host = Host(name="here") if backend == "local" else sshd
    pool = HostPool(connect_timeout=3)
    try:
        stats = security.read_file_stats(pool.get(host), list(paths.values()))
    finally:
        pool.close()
    me = getpass.getuser()
    real = os.path.realpath
    assert stats[paths["private"]] == security.FileStat(0o600, me, stats[paths["private"]].mtime,
                                                        target=real(paths["private"])), stats
    assert stats[paths["open"]].mode == 0o644 and stats[paths["open"]].target == real(paths["open"]), stats
    assert stats[paths["dangling"]].dangling and stats[paths["dangling"]].target == str(tmp_path / "cfg/real/gone.env")
    assert stats[paths["plain"]] == security.FileStat(0o600, me, stats[paths["plain"]].mtime), stats
    assert stats[paths["missing"]] is None


def test_sec_02_judges_the_file_a_link_reaches_and_names_the_link(tmp_path):
    paths = _plant(tmp_path / "cfg")
    profile = tmp_path / "p.yaml"
    profile.write_text(json.dumps({
        "name": "links", "hosts": [{"name": "here", "backend": "local", "roles": ["app"]}],
        "security": {"secret_files": [paths[k] for k in ("private", "open", "dangling", "plain")],
                     "secret_owner": getpass.getuser(), "secret_max_mode": "0600"}}))
    reports = tmp_path / "reports"
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), "--", "-k", "SEC-02", timeout=120)
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    checks = {c["target"]: c for c in summary["checks"] if c["id"] == "SEC-02"}
    assert len(checks) == 4, (res.stdout[-2000:], res.stderr)
    by_path = {p: checks[f"{p}@here"] for p in (paths["private"], paths["open"], paths["dangling"], paths["plain"])}
    private, opened = by_path[paths["private"]], by_path[paths["open"]]
    assert private["outcome"] == "passed", private
    assert opened["outcome"] == "failed" and "mode 0644" in opened["message"], opened
    assert "0777" not in opened["message"] and "0777" not in private["message"]
    assert opened["measured"] == f"mode 0644, owner {getpass.getuser()} (of the file its symlink reaches: -> " \
        f"{os.path.realpath(paths['open'])})", opened["measured"]
    dangling = by_path[paths["dangling"]]
    assert dangling["outcome"] == "failed", dangling
    assert "a dangling link" in dangling["message"] and "gone.env" in dangling["message"], dangling
    assert by_path[paths["plain"]]["outcome"] == "passed", by_path[paths["plain"]]

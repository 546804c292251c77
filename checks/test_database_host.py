"""The database server on its host: runbook 'Database Issues' (sudo systemctl status postgresql)."""

from acgs_verify.check import runbook
from acgs_verify.probes import host as hostfacts


@runbook("DB-02")
def test_postgresql_server_is_running(database_host, hosts, check):
    """sudo systemctl status postgresql  (or, without systemd, its process: ps aux | grep postgres)"""
    db, host = database_host.database, database_host.host
    if db.unit and hostfacts.uses_systemd(hosts, host):
        state = hosts.fact(host, f"unit {db.unit}", lambda node: hostfacts.unit_state(node, db.unit))
        check.that(state == "active", measured=f"{db.unit} is {state}", expected="active")
        return
    if not db.process:
        check.skip(f"host {host.name} has no systemd and the profile gives no process pattern for {db.name}")
    procs = hostfacts.processes_matching(hosts.fact(host, "processes", hostfacts.processes), db.process)
    check.that(bool(procs), measured=f"{len(procs)} processes matching /{db.process}/", expected="at least 1",
               value=[pid for pid, _ in procs])

"""`acgs-verify run` and `pytest checks` take the same options with the same defaults and help (options.py), and
a gate picks the same checks whichever of the two runs it."""

from __future__ import annotations

import json

import pytest

from acgs_verify import options, plugin
from acgs_verify.catalog import GATES
from acgs_verify.cli import build_parser
from tests.conftest import run_cli
from tests.runs import run_pytest


def cli_run_actions() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["run"]._option_string_actions


def plugin_arguments() -> dict:
    parser = pytest.Parser(_ispytest=True)
    plugin.pytest_addoption(parser)
    return {name: arg for arg in parser.getgroup("acgs-verify").options for name in arg.names()}


@pytest.mark.parametrize("option", options.SHARED, ids=lambda o: o.flag)
def test_each_shared_option_has_one_default_and_one_help(option):
    cli = cli_run_actions()[option.flag]
    ours = plugin_arguments()[option.flag].attrs()
    assert cli.default is ours["default"] is option.default
    assert cli.help == ours["help"] == option.help
    assert ours["dest"] == f"acgs_{cli.dest}"


def test_no_shared_option_is_declared_twice():
    # every option the plugin and `run` both know comes from the table, not from a second declaration
    common = set(cli_run_actions()) & set(plugin_arguments())
    assert common == {o.flag for o in options.SHARED}


def test_the_gate_default_is_a_gate_that_runs_every_check():
    assert GATES[options.DEFAULT_GATE]["ids"] is None
    assert build_parser().parse_args(["run"]).gate == options.DEFAULT_GATE


def test_the_cli_hands_its_values_through():
    assert options.pytest_args({"profile": "p", "set": ["a=1", "b=2"], "gate": "smoke", "since": None}) == [
        "--profile", "p", "--set", "a=1", "--set", "b=2", "--gate", "smoke"]


def test_a_gate_selects_the_same_checks_in_pytest_and_in_run(tmp_path, closed_port):
    # one target of every kind the smoke gate reaches, all refusing: every check fails fast, none is left out
    profile = tmp_path / "p.yaml"
    log = tmp_path / "auth.log"
    log.write_text("")
    profile.write_text(
        "hosts: [{name: here, address: 127.0.0.1, backend: local, roles: [app]}]\n"
        f"services: [{{name: auth, port: {closed_port}, log: {log}}}]\n"
        f"databases: [{{name: primary, dsn: 'postgresql://acgs@127.0.0.1:{closed_port}/acgs'}}]\n"
        f"redis: [{{name: cache, url: 'redis://127.0.0.1:{closed_port}/0'}}]\n")
    run = run_cli("run", "--profile", str(profile), "--gate", "smoke", "--report-dir", str(tmp_path / "run"))
    plain = run_pytest("checks", "-p", "no:cacheprovider", "-q", "--profile", str(profile), "--gate", "smoke",
                       "--report-dir", str(tmp_path / "plain"), timeout=180)
    assert run.returncode == plain.returncode == 2, run.stdout[-2000:] + plain.stdout[-2000:]
    summaries = [json.loads((tmp_path / d / "latest" / "summary.json").read_text()) for d in ("run", "plain")]
    picked = [sorted(c["name"] for c in s["checks"]) for s in summaries]
    assert picked[0] == picked[1]
    assert {name.split("[")[0] for name in picked[0]} == set(GATES["smoke"]["ids"])
    assert [s["gate"] for s in summaries] == ["smoke", "smoke"]

"""`acgs-verify run --format nagios` is read by Nagios, Icinga and NRPE as a plugin: its stdout is checked against
the Monitoring Plugins development guidelines' grammar (written below as a parser), for every status, on real runs
of the sandbox, with a `|` inside a failure's message (SYS-03's next step, `ps aux --sort=-rss | head`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from acgs_verify.report.nagios import PIPE_SHOWN_AS, render_nagios
from acgs_verify.results import CheckResult, RunResult
from tests.conftest import SHARED_MACHINE, run_cli

STATUS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}

# "Output of a Monitoring Plugin" (monitoring-plugins/monitoring-plugin-guidelines): the first line is the status,
# `|` starts the performance data, which run to the end of that line and are space-separated
# `'label'=value[UOM][;warn[;crit[;min[;max]]]]`. A label is printable, without `=` or `'`, quoted when it holds a
# space; a value is a decimal number without exponent; warn and crit are range expressions `[@][start:][end]`, never
# empty; the UOMs are the ones Nagios and Icinga know.
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE = rf"@?(?:(?:{_NUMBER}|~):(?:{_NUMBER})?|{_NUMBER})"
_UOM = r"(?:s|ms|us|ns|%|B|KB|MB|GB|TB|c)?"
_LABEL = r"(?:'[^'=]+'|[^'=\s|]+)"
PERF_ITEM = re.compile(rf"(?P<label>{_LABEL})=(?P<value>{_NUMBER})(?P<uom>{_UOM})"
                       rf"(?:;(?P<warn>{_RANGE})(?:;(?P<crit>{_RANGE})(?:;(?P<min>{_NUMBER})(?:;(?P<max>{_NUMBER}))?)?)?)?")
FIRST_LINE = re.compile(r"ACGS (?P<word>OK|WARNING|CRITICAL|UNKNOWN) - (?P<text>[^|]*\S)(?: \| (?P<perf>\S.*))?")


@dataclass
class PluginOutput:
    word: str
    text: str
    perf: dict[str, tuple[str, str, str | None, str | None]]  # label -> (value, uom, warn, crit)
    details: list[str]


def parse_plugin_output(stdout: str, exit_code: int) -> PluginOutput:
    """The grammar, or an AssertionError saying where stdout leaves it."""
    assert stdout.endswith("\n") and stdout.strip(), repr(stdout[-200:])
    first, *details = stdout[:-1].split("\n")
    head = FIRST_LINE.fullmatch(first)
    assert head, f"status line out of grammar: {first!r}"
    assert head["word"] == STATUS[exit_code], f"exit {exit_code} but status {head['word']}"
    perf = {}
    for item in (head["perf"] or "").split(" ") if head["perf"] else []:
        m = PERF_ITEM.fullmatch(item)
        assert m, f"perfdata item out of grammar: {item!r} in {first!r}"
        assert m["label"] not in perf, f"label {m['label']} twice"
        perf[m["label"].strip("'")] = (m["value"], m["uom"], m["warn"], m["crit"])
    for line in details:
        assert line.strip(), f"an empty line in the long output: {stdout!r}"
        assert "|" not in line, f"a | after the status line would start performance data: {line!r}"
        assert not re.search(r"[\x00-\x1f\x7f]", line), repr(line)
    return PluginOutput(head["word"], head["text"], perf, details)


def exceeds(value: float, rng: str) -> bool:
    """Whether `value` is outside the range expression (inside, with @): the guidelines' threshold semantics."""
    inside = rng.startswith("@")
    rng = rng.removeprefix("@")
    start, colon, end = rng.partition(":")
    low, high = (float("-inf") if start == "~" else float(start or 0), float(end) if end else float("inf")) \
        if colon else (0.0, float(start))
    within = low <= value <= high
    return within if inside else not within


def state_by_thresholds(out: PluginOutput) -> int:
    """The state the perfdata thresholds alone give: what a monitoring system recomputing it would see."""
    state = 0
    for value, _, warn, crit in out.perf.values():
        if crit and exceeds(float(value), crit):
            state = 2
        elif warn and exceeds(float(value), warn):
            state = max(state, 1)
    return state


def nagios_run(sandbox, tmp_path, *extra: str, process: bool = False):
    return run_cli("run", "--format", "nagios", "--profile", str(sandbox.profile_path),
                   "--report-dir", str(tmp_path / "reports"), *SHARED_MACHINE, *extra, process=process)


# ------------------------------------------------------------------------------------------------ real runs


def test_ok_run_is_one_status_line_in_grammar(healthy_sandbox, tmp_path):
    # the real entrypoint: what reaches file descriptor 1, workers and children included, is the plugin output
    res = nagios_run(healthy_sandbox, tmp_path, "--gate", "smoke", process=True)
    out = parse_plugin_output(res.stdout, res.returncode)
    assert res.returncode == 0 and out.word == "OK" and out.details == [], res.stdout + res.stderr[-2000:]
    assert out.perf["failed"][0] == "0" and int(out.perf["passed"][0]) == int(out.perf["checks"][0]) > 0
    assert out.perf["compliance"][:2] == ("100", "%") and out.perf["duration"][1] == "s"
    assert state_by_thresholds(out) == 0
    # pytest's progress and the text format's lines went to stderr
    assert "passed" in res.stderr and "reports: " in res.stderr


def test_warning_run_lists_its_p2_failures_with_a_pipe_in_a_next_step(healthy_sandbox, tmp_path):
    healthy_sandbox.break_fault("metrics-json:auth")  # SVC-10 (P2): /metrics answers JSON
    # SYS-03 (P2) over a memory limit no machine meets: its next step is "`ps aux --sort=-rss | head`"
    res = nagios_run(healthy_sandbox, tmp_path, "--set", "thresholds.memory_percent_max=0.1",
                     "--", "-k", "SVC-10 or SVC-01 or SYS-03")
    out = parse_plugin_output(res.stdout, res.returncode)
    assert res.returncode == 1 and out.word == "WARNING", res.stdout + res.stderr[-2000:]
    names = [d.split(" ")[2] for d in out.details]  # SYS-03 on every host of the sandbox (app-1, and ops-1)
    assert out.perf["failed_p2_p3"][0] == str(len(names)) and out.perf["failed_p0_p1"][0] == "0"
    assert state_by_thresholds(out) == 1
    assert names[0] == "SVC-10[auth@app-1]" and "SYS-03[app-1]" in names[1:], out.details
    assert all(n.startswith("SYS-03[") for n in names[1:]), out.details
    # shown, but not as a pipe: the perfdata stays the first line's alone
    assert f"ps aux --sort=-rss {PIPE_SHOWN_AS} head" in out.details[1], out.details[1]


def test_critical_run_shows_a_pipe_in_a_next_step_without_breaking_the_perfdata(healthy_sandbox, tmp_path):
    healthy_sandbox.break_fault("service-unhealthy:constitutional-ai")  # SVC-01, SVC-02 (P0)
    metrics = tmp_path / "acgs.prom"
    res = nagios_run(healthy_sandbox, tmp_path, "--gate", "smoke", "--metrics-file", str(metrics))
    out = parse_plugin_output(res.stdout, res.returncode)
    assert res.returncode == 2 and out.word == "CRITICAL", res.stdout + res.stderr[-2000:]
    assert out.text.startswith("2 of ") and "(P0: 2)" in out.text
    assert out.perf["failed_p0_p1"][0] == "2" and state_by_thresholds(out) == 2
    assert [d.split(" ")[2] for d in out.details] == ["SVC-01[constitutional-ai@app-1]",
                                                      "SVC-02[constitutional-ai@app-1]"]
    assert 'acgs_verify_last_run_exit_code{profile="sandbox",gate="smoke"} 2' in metrics.read_text()


def test_nothing_collected_is_unknown(healthy_sandbox, tmp_path):
    res = nagios_run(healthy_sandbox, tmp_path, "--", "-k", "NO-SUCH-CHECK")
    out = parse_plugin_output(res.stdout, res.returncode)
    assert res.returncode == 3 and out.text.startswith("nothing collected: no check of gate "), res.stdout
    assert "matches the -k and -m filters" in out.text and not out.details
    res = nagios_run(healthy_sandbox, tmp_path, "--", "--no-such-pytest-option")  # pytest itself refuses
    out = parse_plugin_output(res.stdout, res.returncode)
    assert res.returncode == 3, res.stdout
    assert out.text == "run: pytest arguments after --: unrecognized arguments: --no-such-pytest-option", res.stdout


# ------------------------------------------------------------------------------- runs that cannot start


def test_a_bad_profile_is_an_unknown_status_line_on_stdout(write_profile, tmp_path):
    res = run_cli("run", "--format", "nagios", "--profile", str(write_profile("hosts: [\n")),
                  "--report-dir", str(tmp_path / "r"))
    out = parse_plugin_output(res.stdout, res.returncode)
    assert res.returncode == 3 and out.word == "UNKNOWN" and "p.yaml" in out.text, res.stdout + res.stderr
    assert out.details == [] and res.stderr.count("\n") == 1  # the error line, on stderr as always


def test_a_bad_option_is_an_unknown_status_line_on_stdout():
    for args in (["--format=nagios", "--no-such-option"], ["--gate", "lunch", "--format", "nagios"]):
        res = run_cli("run", *args)
        out = parse_plugin_output(res.stdout, res.returncode)
        assert res.returncode == 3 and out.word == "UNKNOWN" and out.details == [], (args, res.stdout, res.stderr)


# --------------------------------------------------------------------- the writer, over what runs rarely show


def _check(id_: str, severity: str, outcome: str, message: str, **kw) -> CheckResult:
    return CheckResult(nodeid=f"checks/test_x.py::t[{id_}]", id=id_, section="services", severity=severity,
                       title="a title | with a pipe", target="t@h", outcome=outcome, message=message, **kw)


def test_pipes_and_control_characters_never_leave_the_status_line():
    result = RunResult("r1", "p", "compliance", "2026-01-01T00:00:00+00:00", duration=0.00004, checks=[
        _check("SVC-03", "P2", "failed", "SVC-03 t@h: measured a|b\x1b[31m; expected c. Next: ps aux | grep x"),
        _check("SVC-01", "P0", "error", "SVC-01 t@h: could not measure: x\ny. Next: `curl | jq`"),
        _check("SVC-02", "P1", "failed", "SVC-02 t@h: waived | one", waived={"reason": "r"}),
        _check("SVC-04", "P0", "passed", ""),
    ], gate_failures=["table a|b vanished since the snapshot"])
    text = render_nagios(result)
    out = parse_plugin_output(text, 2)
    assert "|" not in out.text and "a¦b vanished" in out.text
    assert out.details[0] == "GATE table a¦b vanished since the snapshot"
    assert out.details[1].startswith("ERROR P0 SVC-01[t@h] ")  # most severe first
    assert out.details[2].startswith("FAIL P2 SVC-03[t@h] ") and "\\x1b[31m" in out.details[2]
    assert len(out.details) == 3  # the waived failure and the pass have no line
    assert out.perf["duration"][0] == "0" and out.perf["compliance"][:2] == ("50", "%")
    assert out.perf["gate_failures"][0] == "1" and state_by_thresholds(out) == 2
    # failed: measured, and wrong (SVC-03); errors: could not measure (SVC-01), counted apart
    assert out.perf["failed"][0] == "1" and out.perf["errors"][0] == "1"
    assert out.perf["failed_p0_p1"][0] == "1" and out.perf["failed_p2_p3"][0] == "1"  # both close the gate


def test_a_fleet_of_failures_is_cut_to_what_nagios_keeps():
    checks = [_check("SVC-01", "P0", "error", f"SVC-01 t{i}@h: could not measure: host unreachable")
              for i in range(500)]
    text = render_nagios(RunResult("r1", "p", "compliance", "2026-01-01T00:00:00+00:00", checks=checks))
    out = parse_plugin_output(text, 2)
    assert len(text.encode()) < 8192  # Nagios Core's MAX_PLUGIN_OUTPUT_LENGTH
    assert len(out.details) == 30 and out.details[-1].startswith("... and 471 more")


def test_the_shipped_nagios_and_nrpe_commands_are_runs_in_nagios_format():
    import shlex

    from acgs_verify.cli import build_parser
    from tests.conftest import REPO

    found = []
    for name in ("acgs-verify.cfg", "nrpe-acgs-verify.cfg"):
        text = (REPO / "deploy" / "nagios" / name).read_text()
        for line in re.findall(r"(?:command_line\s+|command\[\w+\]=)(\S*acgs-verify run .*)", text):
            argv = shlex.split(line.replace("$ARG1$", "production").replace("$ARG2$", "smoke"))[1:]
            args = build_parser().parse_args(argv)
            assert args.command == "run" and args.format == "nagios", line
            found.append(name)
    assert sorted(set(found)) == ["acgs-verify.cfg", "nrpe-acgs-verify.cfg"]
    assert "nagios/acgs-verify.cfg" in (REPO / "deploy" / "README.md").read_text()

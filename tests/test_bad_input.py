"""Bad input found by a newcomer's afternoon (issue 14): each is one line naming the file, line and field, or the
option, and exit 3 -- never a run against an implied target, never "internal error"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from acgs_verify.profile import ProfileError, load_profile
from acgs_verify.waivers import WaiverError, load_waivers
from tests.conftest import REPO, profile_error, run_cli

ONE_TARGET = "services: [{name: auth, port: 8016}]\n"


def one_error_line(res) -> str:
    assert res.returncode == 3, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout and "internal error" not in res.stderr
    assert lines[0].startswith("acgs-verify: error: ") and lines[0].count("acgs-verify") == 1, lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ 1: names no target


@pytest.mark.parametrize("content", ["", "{}\n", "# production, truncated\n# more comments\n", "---\n",
                                     "thresholds: {db_long_query_seconds: 60}\n", "hosts: []\n"])
def test_profile_that_names_no_target_is_refused(write_profile, content):
    text = profile_error(str(write_profile(content)))
    assert "p.yaml" in text and "names no target" in text


def test_profile_naming_no_target_through_the_cli_is_exit_3(write_profile, tmp_path):
    line = one_error_line(run_cli("run", "--profile", str(write_profile("{}\n")), "--report-dir",
                                  str(tmp_path / "r")))
    assert "names no target" in line
    assert not (tmp_path / "r").exists()  # nothing created for a run that cannot start


def test_a_profile_naming_only_hosts_or_only_a_database_is_fine(write_profile):
    assert load_profile(str(write_profile("hosts: [{name: a}]\n"))).hosts[0].name == "a"
    assert load_profile(str(write_profile("databases: [{name: db, dsn: 'postgresql://a@h/x'}]\n"))).databases


@pytest.mark.parametrize("content, first, second", [
    ("services: [{name: auth, port: 1}]\nthresholds: {}\nservices: []\n", 1, 3),
    ("services:\n  - name: auth\n    port: 1\n    port: 2\n", 3, 4),
    ("services: [{name: a, port: 1, name: b}]\n", 1, 1),
    ("thresholds:\n  disk_percent_max: 80\n  cpu_percent_max: 70\n  disk_percent_max: 95\nhosts: [{name: a}]\n",
     2, 4),
])
def test_a_key_given_twice_names_both_lines(write_profile, content, first, second):
    text = profile_error(str(write_profile(content)))
    assert "given twice" in text and f"lines {first} and {second}" in text and "p.yaml" in text


def test_yaml_merge_keys_are_not_duplicates(write_profile):
    text = "base: &b {port: 1}\nservices: [{<<: *b, name: auth, port: 2}]\n"
    with pytest.raises(ProfileError, match="unknown field 'base'"):
        load_profile(str(write_profile(text)))


# --------------------------------------------------------------------- 2: non-finite, absurd numbers


@pytest.mark.parametrize("override", ["thresholds.db_long_query_seconds=1e400", "thresholds.db_long_query_seconds=nan",
                                      "thresholds.db_long_query_seconds=.inf", "thresholds.latency_p99_fail_ms=inf",
                                      "thresholds.backup_max_age_hours=1e300", "thresholds.audit_retention_days=1e9",
                                      "services.auth.port=1e400"])
def test_non_finite_or_absurd_set_is_refused(write_profile, override):
    text = profile_error(str(write_profile(ONE_TARGET)), [override])
    assert f"--set {override}" in text


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+400", "1e400", "1.0e+300"])
def test_non_finite_or_absurd_numbers_in_a_profile_name_the_line(write_profile, value):
    text = profile_error(str(write_profile(f"{ONE_TARGET}thresholds:\n  db_long_query_seconds: {value}\n")))
    assert "p.yaml:3" in text and "thresholds.db_long_query_seconds" in text


@pytest.mark.parametrize("args, option", [
    (["--wait", "nan"], "--wait"), (["--wait", "inf"], "--wait"), (["--wait", "1e400"], "--wait"),
    (["--wait", "1e12"], "--wait"), (["--workers", "100000000"], "--workers"),
    (["--set", "thresholds.db_long_query_seconds=1e400"], "--set"),
])
def test_non_finite_or_absurd_options_are_exit_3(args, option, tmp_path, write_profile):
    line = one_error_line(run_cli("run", "--profile", str(write_profile(ONE_TARGET)), "--report-dir",
                                  str(tmp_path / "r"), *args, timeout=60))
    assert option in line


def test_absurd_sandbox_port_offset_is_exit_3(tmp_path):
    line = one_error_line(run_cli("sandbox", "status", "--dir", str(tmp_path / "sb"), "--port-offset", "1e400"))
    assert "--port-offset" in line
    line = one_error_line(run_cli("sandbox", "status", "--dir", str(tmp_path / "sb"), "--port-offset", "99999999"))
    assert "--port-offset" in line


# ---------------------------------------------------------------------------- 3: names that become paths


@pytest.mark.parametrize("name", ["a/b", "../../x", "..", ".hidden", "a b"])
def test_a_profile_name_that_would_be_a_path_is_refused_up_front(write_profile, tmp_path, name):
    text = profile_error(str(write_profile(ONE_TARGET)), [f"name={name}"])
    assert "--set name=" in text
    line = one_error_line(run_cli("run", "--profile", str(write_profile(ONE_TARGET)), "--set", f"name={name}",
                                  "--report-dir", str(tmp_path / "r")))
    assert "name" in line
    assert not list((tmp_path / "r").glob(".partial-*")) if (tmp_path / "r").exists() else True
    assert not (tmp_path / "x").exists()


def test_a_profile_file_name_that_is_not_a_plain_name_still_loads(tmp_path):
    path = tmp_path / "my profile (copy).yaml"
    path.write_text(ONE_TARGET)
    assert "/" not in load_profile(str(path)).name and " " not in load_profile(str(path)).name


# ----------------------------------------------------------------------------- 4: --since in the future


@pytest.mark.parametrize("since", ["2099-01-01", "2099-01-01T00:00:00+00:00"])
def test_since_in_the_future_is_exit_3(since, tmp_path):
    line = one_error_line(run_cli("run", "--profile", "sandbox", "--since", since,
                                  "--report-dir", str(tmp_path / "r")))
    assert "--since" in line and "future" in line


def test_since_too_far_back_is_one_line(tmp_path):
    line = one_error_line(run_cli("run", "--profile", "sandbox", "--since", "99999999999999d",
                                  "--report-dir", str(tmp_path / "r")))
    assert "--since" in line


def test_an_empty_log_window_says_so_and_does_not_blame_the_log(tmp_path):
    from datetime import datetime, timedelta

    from acgs_verify.check import ProbeError
    from acgs_verify.probes.logs import LogReader

    class Local:
        name, backend = "app-1", "local"

    log = tmp_path / "auth.log"
    old = (datetime.now() - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S,000")
    log.write_text(f"{old} - acgs.auth - INFO - Constitutional Hash: cdd01ef066bc6cf2\n" * 3)
    since = datetime.now().astimezone() - timedelta(minutes=5)
    with pytest.raises(ProbeError) as exc:
        LogReader(None, since=since).tail(Local(), str(log), 5000)
    # a window that began yesterday (a test run at 00:03) names its date
    when = f"{since:%H:%M}" if since.date() == datetime.now().astimezone().date() else f"{since:%Y-%m-%d %H:%M}"
    assert str(exc.value) == f"no lines since {when} in {log} on app-1"
    assert len(LogReader(None).tail(Local(), str(log), 5000)) == 3  # without a window: read whole


# ---------------------------------------------------------------------- 6, 9: dates and waiver typos


@pytest.mark.parametrize("date", ["2025-02-30", "2025-13-45"])
def test_impossible_dates_in_a_waivers_file_name_file_line_and_field(tmp_path, date):
    (tmp_path / "p.yaml").write_text(ONE_TARGET)
    path = tmp_path / "waivers.yaml"
    path.write_text(f"waivers:\n  - id: SVC-06\n    reason: warm-up\n    owner: alice\n    expires: {date}\n")
    with pytest.raises(WaiverError) as exc:
        load_waivers(path)
    text = str(exc.value)
    assert "waivers.yaml:5" in text and "waivers[0].expires" in text and date in text, text
    line = one_error_line(run_cli("run", "--profile", str(path.parent / "p.yaml"), "--waivers", str(path),
                                  "--report-dir", str(tmp_path / "r")))
    assert "waivers.yaml:5" in line


def test_impossible_date_in_a_profile_names_file_line_and_field(write_profile):
    text = profile_error(str(write_profile(f"{ONE_TARGET}description: 2025-02-30\n")))
    assert "p.yaml:2" in text and "description" in text and "2025-02-30" in text


def test_waiver_typo_names_the_unknown_key(tmp_path):
    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - id: SVC-06\n    reason: warm-up\n    owner: alice\n    expire: 2025-07-31\n")
    with pytest.raises(WaiverError) as exc:
        load_waivers(path)
    text = str(exc.value)
    assert "waivers.yaml:5" in text and "unknown field 'expire'" in text and "did you mean 'expires'" in text


def test_every_error_of_a_waiver_is_named_not_counted(tmp_path):
    """`owner: Field required (and 1 more)` hid that `expires` was missing too: the user fixed one and ran again."""
    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - {id: SEC-03, reason: noisy}\n")
    with pytest.raises(WaiverError) as exc:
        load_waivers(path)
    assert str(exc.value).endswith(": waivers[0].owner: Field required (also waivers[0].expires: Field required)")


def test_a_profile_with_many_errors_names_three_and_counts_the_rest(write_profile):
    text = profile_error(str(write_profile("hosts:\n" + "".join(f"  - {{name: h{i}, port: x}}\n" for i in range(6)))))
    assert "\n" not in text and text.count("hosts[") == 4 and text.endswith("; and 2 more)"), text


# ------------------------------------------------------------------------------------ 7: --report-dir


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "reports").write_text("not a directory")
    return tmp_path / "reports"


def _under_read_only(tmp_path: Path) -> Path:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    return tmp_path / "ro" / "reports"


@pytest.mark.parametrize(("report_dir", "says"), [
    (_a_file, "not a directory"),
    pytest.param(_under_read_only, "", marks=pytest.mark.skipif(os.geteuid() == 0,
                                                                reason="root writes into read-only directories")),
    (lambda tmp_path: Path("/sys/acgs-reports"), "--report-dir /sys/acgs-reports"),
], ids=["a-file", "read-only", "under-sys"])
def test_a_report_dir_that_cannot_be_written_names_the_option(report_dir, says, tmp_path):
    line = one_error_line(run_cli("run", "--profile", "sandbox", "--report-dir", str(report_dir(tmp_path))))
    assert "--report-dir" in line and says in line, line


@pytest.mark.parametrize("under_dev", ["/dev", "/dev/acgs-reports", "/dev/shm/../null"])
def test_report_dir_under_dev_is_refused_but_dev_shm_is_a_tmpfs_for_files(under_dev):
    from acgs_verify.rundir import ReportDirError, usable_report_dir

    with pytest.raises(ReportDirError, match="under /dev, a kernel filesystem"):
        usable_report_dir(Path(under_dev), create=False)
    if os.access("/dev/shm", os.W_OK):
        assert usable_report_dir(Path("/dev/shm/acgs-reports"), create=False) == Path("/dev/shm/acgs-reports")


# -------------------------------------------------------------------------------------- 8: closed pipe


def test_catalog_into_a_closed_pipe_is_not_an_error():
    # `acgs-verify catalog --json | head`: the reader is gone before the writer is done
    proc = subprocess.Popen([sys.executable, "-m", "acgs_verify.cli", "catalog", "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # closed before the catalog is written: every write meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == b""


# --------------------------------------------------------------------------------------------- CLI


def test_version():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("acgs-verify ") and res.stdout.strip()[-1].isdigit()


def test_debug_is_accepted_after_the_subcommand(write_profile):
    res = run_cli("run", "--debug", "--profile", str(write_profile("{}\n")), process=True)  # the interpreter prints it
    assert res.returncode != 0 and "unrecognized arguments" not in res.stderr
    assert "Traceback" in res.stderr  # --debug shows the traceback of the error it would have printed


def test_every_option_has_help():
    from acgs_verify.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = []
    for name, sub in [("", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if action.help is None and action.dest != "help":
                missing.append(f"{name} {action.option_strings or action.dest}")
    assert missing == []


def test_a_directory_given_as_profile_says_it_is_a_directory(tmp_path):
    for arg in (str(tmp_path), "."):
        line = one_error_line(run_cli("run", "--profile", arg, "--report-dir", str(tmp_path / "r"), cwd=tmp_path))
        assert "is a directory" in line


def test_bad_option_has_one_prefix():
    line = one_error_line(run_cli("run", "--bogus-option"))
    assert "unrecognized arguments: --bogus-option" in line


def test_sandbox_down_counts_in_words(tmp_path):
    res = run_cli("sandbox", "down", "--dir", str(tmp_path / "sb"))
    assert res.returncode == 0 and "(0 processes stopped)" in res.stdout
    from acgs_verify.cli import plural

    assert plural(1, "process") == "1 process" and plural(2, "process") == "2 processes"


def test_unreadable_profile_path_under_proc_is_one_line():
    line = one_error_line(run_cli("run", "--profile", "/proc/self/does-not-exist.yaml"))
    assert "not found" in line



# ------------------------------------------------------------ 9: ssh fields that would be options (issue 21)

# (field, value, what the line says): {M} is a marker file that a value run as ssh's option or as a line of the
# generated ssh_config (ProxyCommand) would create; before, these loaded and were refused only at connect time
SSH_FIELDS = [
    ("address", "-oProxyCommand=touch {M}", "must not start with '-'"),
    ("address", "app-1\n  ProxyCommand touch {M}", "white space or a control character"),
    ("address", "app-1\x1b]0;title\x07", "white space or a control character"),
    ("address", "app-1;touch", "not a host name or IP address"),
    ("address", "10.0.0.5%eth0", "not a host name or IP address"),
    ("user", "-oProxyCommand=touch {M}", "must not start with '-'"),
    ("user", "acgs\n  ProxyCommand touch {M}", "white space or a control character"),
    ("user", "ac gs", "white space or a control character"),
    ("user", "acgs\"x", "is not a user name"),
    ("identity_file", "-oProxyCommand=touch", "must not start with '-'"),
    ("identity_file", "/keys/acgs\n  ProxyCommand touch {M}", "control character"),
    ("known_hosts", "/ssh/known\r  ProxyCommand touch {M}", "control character"),
    ("known_hosts", "/ssh/known\u2028x", "control character"),
    ("ssh_config", "/ssh/config\tx", "control character"),
    ("ssh_config", '/ssh/con"fig', "double quote"),
]


@pytest.mark.parametrize("field, value, says", SSH_FIELDS, ids=[f"{f} {v!r}" for f, v, _ in SSH_FIELDS])
def test_an_ssh_field_that_is_not_one_value_is_refused_when_the_profile_loads(write_profile, field, value, says,
                                                                              tmp_path):
    import json

    marker = tmp_path / "marker"
    value = value.replace("{M}", str(marker))
    # JSON's string escapes are YAML's double-quoted ones: the value reaches the model exactly
    path = write_profile(f"hosts:\n  - name: app-1\n    backend: ssh\n    {field}: {json.dumps(value)}\n")
    line = one_error_line(run_cli("run", "--profile", str(path), "--report-dir", str(tmp_path / "r"),
                                  cwd=tmp_path))
    assert f"p.yaml:4: hosts[0].{field}: " in line and says in line, line
    assert not marker.exists() and not (tmp_path / "r").exists()  # refused before any host was touched


@pytest.mark.parametrize("field, value", [
    ("address", "acgs-app-1.internal"), ("address", "10.0.0.5"), ("address", "fe80::1%eth0"),
    ("address", "[::1]"), ("address", "db_1.corp."), ("user", "acgs"), ("user", "CORP@acgs"), ("user", "host1$"),
    ("identity_file", "~/.ssh/acgs key"), ("known_hosts", "./-known"), ("ssh_config", "/etc/ssh/ssh_config.d/é"),
])
def test_ordinary_ssh_fields_still_load(write_profile, field, value):
    import json

    path = write_profile(f"hosts:\n  - name: app-1\n    backend: ssh\n    {field}: {json.dumps(value)}\n")
    assert getattr(load_profile(str(path)).hosts[0], field) == value

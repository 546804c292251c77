"""A next step's commands are pasted by an operator at 3 a.m.: every profile value inside one is one quoted word.

A unit, log, health path, address or path holding `'; touch M; '`, `$(touch M)`, backticks or a newline would
otherwise run the payload in the operator's shell, as root (`sudo systemctl restart ...`).
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess

import pytest
from pydantic import ValidationError

from acgs_verify.catalog import CATALOG
from tests.test_next_steps_from_profile import ELSEWHERE, _target_kinds


def _payloads(marker: str) -> list[str]:
    return [f"'; touch {marker}; '", f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker} #",
            f"x\ntouch {marker}\n", f"-x\rtouch {marker}", f"\x1b]0;t\x07$(touch {marker})"]


# where each payload goes: (what it names, how to put it into a profile dict)
def _set(path: list, value_of):
    def put(profile: dict, payload: str) -> None:
        node = profile
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value_of(payload)
    return put


FIELDS = {
    "services[].unit": _set(["services", 0, "unit"], lambda p: f"gate{p}.service"),
    "services[].unit (leading -)": _set(["services", 0, "unit"], lambda p: f"-{p}"),
    "services[].log": _set(["services", 0, "log"], lambda p: f"/srv/logs/{p}.log"),
    "services[].log (leading -)": _set(["services", 1, "log"], lambda p: f"-{p}"),
    "services[].health_path": _set(["services", 0, "health_path"], lambda p: f"/h{p}"),
    "hosts[].address": _set(["hosts", 0, "address"], lambda p: f"web{p}"),
    "paths.logs": _set(["paths", "logs"], lambda p: f"/srv/{p}"),
    "paths.app_root": _set(["paths", "app_root"], lambda p: f"/opt/{p}"),
    "databases[].unit": _set(["databases", 0, "unit"], lambda p: f"pg{p}"),
    "databases[].dsn host": _set(["databases", 0, "dsn"], lambda p: f"postgresql://checker@h{p}:15999/ledger"),
    "redis[].url host": _set(["redis", 0, "url"], lambda p: f"redis://h{p}:16999/2"),
}


def _rendered(profile) -> list[tuple[str, str, str]]:
    from acgs_verify.check import next_step_for
    from acgs_verify.targets import TARGET_KINDS

    kinds, out = _target_kinds(), []
    for cid, e in CATALOG.items():
        for kind in kinds[cid] or {"environment"}:
            for target in TARGET_KINDS[kind](profile):
                for systemd in (True, False, None):
                    out.append((cid, target.id, next_step_for(e, target, systemd, profile)))
    return out


def _words_by_the_shell(command: str, cwd) -> list[str]:
    """The words bash makes of a pasted command, with every expansion it would do (`set -- COMMAND`), run where a
    payload that escaped its quotes would leave its marker."""
    done = subprocess.run(["bash", "-c", f"set -- {command}\nprintf '%s\\0' \"$@\""], cwd=cwd, capture_output=True,
                          timeout=10)
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("field", FIELDS)
def test_every_profile_value_in_a_next_step_command_is_one_quoted_word(field, tmp_path):
    from acgs_verify.profile import Profile

    # a relative name, run where bash runs: a URL's host ends at a `/`, and is read in lower case
    name = "pwnedmarker"
    marker = tmp_path / name
    refused = used = 0
    for payload in _payloads(name):
        data = copy.deepcopy(ELSEWHERE)
        FIELDS[field](data, payload)
        try:
            profile = Profile.model_validate(data)
        except ValidationError:  # refused when the profile loads: it never reaches a next step
            refused += 1
            continue
        for cid, tid, step in _rendered(profile):
            assert not re.search(r"[\x00-\x1f\x7f-\x9f]", step), (field, cid, tid, step)
            for command in step.split("`")[1::2]:
                if name not in command:  # a command of the catalog's own, or in general words (<unit>)
                    continue
                used += 1
                words = shlex.split(command)
                assert words == _words_by_the_shell(command, tmp_path), (field, cid, tid, command)
                # the payload is inside one word, not a word of its own, an option or a command
                assert "touch" not in words and not marker.exists(), (field, cid, tid, command)
                assert sum(name in w for w in words) == 1, (field, cid, tid, command)
    assert used or refused == len(_payloads(name)), f"{field}: no step quoted it and the profile took it"


def test_a_plain_value_stays_as_the_operator_would_type_it():
    from acgs_verify.check import next_step_for
    from acgs_verify.profile import Profile
    from acgs_verify.targets import TARGET_KINDS

    data = copy.deepcopy(ELSEWHERE)
    data["services"][0]["unit"], data["services"][0]["log"] = "--version", "-odd.log"
    profile = Profile.model_validate(data)
    gate = next(t for t in TARGET_KINDS["service"](profile) if t.id == "gate@web-7")
    step = next_step_for(CATALOG["SVC-03"], gate, True, profile)
    assert step == "Service Outage: `sudo systemctl restart -- --version`, then `tail -f ./-odd.log`", step
    judge = next(t for t in TARGET_KINDS["service"](profile) if t.id == "judge@web-7")
    assert "`tail -f /srv/logs/judge.log`" in next_step_for(CATALOG["SVC-03"], judge, True, profile)

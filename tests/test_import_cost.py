"""Start-up stays cheap: a library is imported by the fixture, probe or writer that uses it, never on the way there.

Each case runs in a fresh interpreter and lists which of the costly libraries it found in sys.modules (names, not
timings, so a loaded machine cannot make it flaky). BENCHMARKS.md has what each one costs a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# every library a check, probe or report writer imports when it needs it, and pytest, which only a run needs
TARGET_LIBRARIES = ("httpx", "httpcore", "psycopg", "redis", "paramiko", "testinfra", "jinja2", "allure_commons",
                    "prometheus_client", "cryptography", "xdist")
PROFILE_MODEL = ("pydantic", "yaml")

CASES = {
    # what `acgs-verify ANYTHING` pays before it looks at its arguments
    "import acgs_verify.cli": (
        "import acgs_verify.cli",
        (*TARGET_LIBRARIES, *PROFILE_MODEL, "pytest", "importlib.metadata")),
    # `acgs-verify --help` and every command's parsing (the version is looked up for --version alone)
    "the command line parser": (
        "import acgs_verify.cli as cli\ncli.build_parser()",
        (*TARGET_LIBRARIES, *PROFILE_MODEL, "pytest", "importlib.metadata")),
    # a profile whose DSN and Redis URL are plain: read without the drivers, for a gate that never connects
    "loading a profile with plain URLs": (
        "import pathlib, tempfile\nfrom acgs_verify.profile import load_profile\n"
        "p = pathlib.Path(tempfile.mkdtemp()) / 'p.yaml'\n"
        "p.write_text('databases: [{name: primary, dsn: \"postgresql://acgs@127.0.0.1:5432/acgs\"}]\\n'\n"
        "             'redis: [{name: cache, url: \"redis://127.0.0.1:6379/0\"}]\\n')\n"
        "assert load_profile(str(p)).databases[0].name == 'primary'",
        ("psycopg", "redis")),
    # what collection imports: the plugin and every check module
    "the plugin and every check module": (
        "import importlib, pathlib, sys\nimport acgs_verify.plugin\nsys.path.insert(0, 'checks')\n"
        "for f in sorted(pathlib.Path('checks').glob('test_*.py')):\n    importlib.import_module(f.stem)",
        TARGET_LIBRARIES),
}


@pytest.mark.parametrize("case", CASES)
def test_a_library_is_not_imported_before_it_is_used(case):
    code, unwanted = CASES[case]
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {list(unwanted)!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [], f"{case} imported them"


def test_the_check_modules_were_found():
    # the third case above would pass vacuously if there were no check module to import
    assert len(list((REPO / "checks").glob("test_*.py"))) >= 5

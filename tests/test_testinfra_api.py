"""What hosts/ uses of testinfra, used for real: a testinfra release that renames, drops or changes any of it fails
here, not in a nightly run. Only public API is used (hosts/backends.py): testinfra.get_host with the options named
below, a backend's run/get_command/result/get_connection_type, CommandResult's rc/stdout/stderr/stdout_bytes, the
ssh backend's settings read back for an ansible host, AnsibleRunner.get_host, and BaseBackend as the base of our
paramiko backend."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import testinfra
from testinfra.backend.base import BaseBackend
from testinfra.host import Host as Conn
from testinfra.utils.ansible_runner import AnsibleRunner

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.backends import live_paramiko_class
from acgs_verify.hosts.pool import HostPool
from acgs_verify.inventory import ensure_ansible_on_path
from acgs_verify.profile import Host
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.servers import closed_port, lone_sshd

ADDRESS = "127.0.0.3"
needs_sshd = pytest.mark.skipif(sshd_binary() is None, reason="needs openssh-server (.ci/run installs it)")
# what a probe's command may print and exit with: bytes that are not ASCII, stderr, a non-zero status
COMMAND = "printf 'out \\303\\251\\n'; printf 'err\\n' >&2; exit 3"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with lone_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS) as (_, host):
        yield Host.model_validate(host)


@pytest.fixture
def pool():
    p = HostPool(connect_timeout=3)
    yield p
    p.close()


def _says_the_command(res) -> None:
    assert (res.rc, res.stdout, res.stderr) == (3, "out é\n", "err\n")
    assert res.stdout_bytes == "out é\n".encode() and not res.succeeded and res.failed


def test_a_local_backend_runs_quotes_and_builds_results():
    conn = testinfra.get_host("local://")
    backend = conn.backend
    assert backend.get_connection_type() == "local"
    _says_the_command(backend.run(COMMAND))
    # get_command: the %s form quotes each argument (hosts/batch.py keys a batch's outputs by it)
    assert backend.get_command("ls -- %s", "a b; c") == "ls -- 'a b; c'"
    made = backend.result(0, b"true", b"x\n", b"")  # hosts/batch.py answers a replayed command with one
    assert (made.rc, made.stdout, made.stderr, made.stdout_bytes) == (0, "x\n", "", b"x\n")
    assert conn.check_output("printf 'a\\n'") == "a"  # probes call check_output through the Host
    assert conn.run("exit 4").rc == 4


def test_get_host_takes_the_ssh_options_we_pass_and_gives_them_back(tmp_path):
    """hosts/backends.py opens an ansible host over ssh with the inventory's settings read back from testinfra's
    own ssh backend, plus ours: every keyword and attribute used there."""
    config = tmp_path / "ssh_config"
    params = inspect.signature(testinfra.backend.get_backend_class("ssh").__init__).parameters
    for name in ("ssh_config", "ssh_identity_file", "timeout", "controlpath", "ssh_extra_args"):
        assert name in params, name
    conn = testinfra.get_host("ssh://us%40er:p%3Ass@[::1]:2222", ssh_config=str(config), timeout=4,
                              ssh_identity_file="/k", ssh_extra_args="-o A=b", controlpath="/tmp/cp",
                              sudo=True, sudo_user="postgres")
    b = conn.backend
    assert b.get_connection_type() == "ssh"
    assert (b.host.name, b.host.port, b.host.user, b.host.password) == ("::1", "2222", "us@er", "p:ss")
    assert (b.ssh_config, b.timeout, b.ssh_identity_file, b.ssh_extra_args, b.controlpath) == \
        (str(config), 4, "/k", "-o A=b", "/tmp/cp")
    assert (b.sudo, b.sudo_user) == (True, "postgres")


def test_our_paramiko_backend_is_a_complete_testinfra_backend():
    cls = live_paramiko_class()
    assert issubclass(cls, BaseBackend) and not inspect.isabstract(cls)
    assert cls.get_connection_type() == "paramiko"


@needs_sshd
def test_ssh_backend_runs_over_our_ssh_config_and_fails_with_runtime_error_when_ssh_does(sshd, pool):
    conn = pool.get(sshd)
    assert conn.backend.get_connection_type() == "ssh"
    _says_the_command(conn.run(COMMAND))
    # ssh's own failure (exit 255) is RuntimeError: the pool reads it as "host unreachable"
    down = sshd.model_copy(update={"name": "down", "port": closed_port(ADDRESS)})
    with pytest.raises(RuntimeError):
        pool.backends.open(down).run("true")


@needs_sshd
def test_paramiko_backend_runs_on_our_client_through_testinfra_modules(sshd, pool):
    para = sshd.model_copy(update={"name": "para", "backend": "paramiko"})
    conn = pool.get(para)
    assert isinstance(conn, Conn) and conn.backend.get_connection_type() == "paramiko"
    _says_the_command(conn.run(COMMAND))
    assert conn.file("/etc/passwd").is_file  # a testinfra module runs through our backend's run()
    pool.close()  # our client closed: a later command fails at once instead of reconnecting unchecked
    with pytest.raises(RuntimeError):
        conn.run("true")


@needs_sshd
def test_ansible_runner_resolves_an_inventory_host_to_an_ssh_backend(sshd, tmp_path):
    ensure_ansible_on_path()
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"remote-app ansible_host={ADDRESS} ansible_port={sshd.port} "
                         f"ansible_user=someone ansible_ssh_private_key_file={sshd.identity_file}\n")
    inner = AnsibleRunner.get_runner(str(inventory)).get_host("remote-app", ssh_config="/dev/null")
    b = inner.backend
    assert b.get_connection_type() == "ssh"
    assert (b.host.name, str(b.host.port), b.host.user) == (ADDRESS, str(sshd.port), "someone")
    assert (b.ssh_config, b.ssh_identity_file) == ("/dev/null", sshd.identity_file)
    assert isinstance(b.ssh_extra_args, str) and isinstance(b.controlpath, str | None)
    # and the pool opens it with the profile's timeout, not testinfra's 10 s
    pool = HostPool(connect_timeout=2, inventory=str(inventory))
    try:
        h = sshd.model_copy(update={"name": "remote-app", "backend": "ansible", "user": None})
        conn = pool.backends.open(h)
        assert conn.backend.get_connection_type() == "ssh" and conn.backend.timeout == 2
        assert conn.backend.host.user == "someone" and Path(conn.backend.ssh_config).parent == pool.backends.ssh_dir
    finally:
        pool.close()


def test_an_unknown_backend_is_refused_in_one_line(pool):
    with pytest.raises(ProbeError, match="unknown backend"):
        pool.backends.open(Host.model_construct(name="x", address="127.0.0.1", backend="telnet", roles=[],
                                                mounts=[], port=None, user=None))

"""The PostgreSQL service as configured (no server): its command line, whom it runs as, where its
programs come from, its port, how it is stopped, and that `devstack env` never prints its password."""

from __future__ import annotations

import os
import pwd
import signal
import socket

import pytest

from devstack import Stack, StackError, StackSettings
from devstack import __main__ as cli
from devstack import stack as stack_module
from devstack.probes import free_ports


@pytest.fixture
def postgres(tmp_path):
    return Stack(StackSettings(home=tmp_path, postgres_port=15432)).services["postgres"]


def _server_programs(lib, *majors, programs=("postgres", "initdb")):
    for major in majors:
        (lib / major / "bin").mkdir(parents=True)
        for program in programs:
            (lib / major / "bin" / program).touch()


def test_the_server_listens_on_loopback_at_its_port_with_its_socket_in_its_state_folder(postgres, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr(stack_module, "POSTGRES_LIB", tmp_path / "lib")
    monkeypatch.setattr(type(postgres), "run_as", lambda self: {})  # its own user, not root
    _server_programs(tmp_path / "lib", "15")
    argv, env = postgres.command()
    assert argv == [str(tmp_path / "lib" / "15" / "bin" / "postgres"), "-D", str(tmp_path / "postgres" / "data"),
                    "-c", "listen_addresses=127.0.0.1", "-c", "port=15432",
                    "-c", f"unix_socket_directories={tmp_path / 'postgres' / 'run'}"]
    assert env == {}
    assert postgres.log == tmp_path / "logs" / "postgres.log"
    assert postgres.endpoint() == "postgresql://127.0.0.1:15432/ctr"


def test_the_cluster_takes_passwords_over_tcp_only(postgres, tmp_path, monkeypatch):
    monkeypatch.setattr(stack_module, "POSTGRES_LIB", tmp_path / "lib")
    _server_programs(tmp_path / "lib", "15")
    initdb = postgres.initdb_command()
    assert initdb[:3] == [str(tmp_path / "lib" / "15" / "bin" / "initdb"), "-D", str(postgres.data_dir)]
    assert {"--encoding=UTF8", "--auth-local=trust", "--auth-host=scram-sha-256"} <= set(initdb)


def test_postgres_port_moves_it(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTGRES_PORT", "55432")
    assert Stack(StackSettings(home=tmp_path)).services["postgres"].ports() == [55432]
    monkeypatch.delenv("POSTGRES_PORT")
    assert StackSettings(home=tmp_path).postgres_port == 5432


def test_the_newest_major_version_with_a_server_is_used(postgres, tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    monkeypatch.setattr(stack_module, "POSTGRES_LIB", lib)
    _server_programs(lib, "9", "13", "15")
    # 17 has only the client programs (postgresql-client-17), so it cannot serve.
    _server_programs(lib, "17", programs=("psql", "pg_isready"))
    assert postgres.bin_dir() == lib / "15" / "bin"


def test_no_server_installed_is_one_sentence_naming_the_package(postgres, tmp_path, monkeypatch):
    monkeypatch.setattr(stack_module, "POSTGRES_LIB", tmp_path / "nothing")
    with pytest.raises(StackError) as error:
        postgres.prepare()
    assert str(error.value) == (
        "PostgreSQL is needed for the real-time CTR store but its server is not installed "
        f"(no {tmp_path / 'nothing'}/<major>/bin/postgres); install Debian's package (apt-get install postgresql)")


def test_as_root_the_server_runs_as_the_postgres_user(postgres, monkeypatch):
    account = pwd.struct_passwd(("postgres", "x", 101, 104, "", "/var/lib/postgresql", "/bin/bash"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: {"postgres": account}[name])
    assert postgres.run_as() == {"user": 101, "group": 104, "extra_groups": []}


def test_as_another_user_the_server_runs_as_that_user(postgres, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert postgres.run_as() == {}


def test_as_root_without_a_postgres_user_is_one_sentence(postgres, monkeypatch):
    def no_such_user(name):
        raise KeyError(name)

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    with pytest.raises(StackError, match=r"^PostgreSQL refuses to run as root and there is no postgres user"):
        postgres.run_as()


def test_a_root_server_that_cannot_enter_the_stack_home_keeps_its_folders_under_var_tmp(tmp_path, monkeypatch):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    service = Stack(StackSettings(home=closed / "devstack")).services["postgres"]
    service.state_dir.mkdir(parents=True)
    # Any account other than the folder's owner and group: it cannot enter a 0700 folder.
    stranger = {"user": closed.stat().st_uid + 4242, "group": closed.stat().st_gid + 4242, "extra_groups": []}
    monkeypatch.setattr(type(service), "run_as", lambda self: stranger)
    assert str(service.data_dir).startswith("/var/tmp/avazu-devstack/postgres-")
    assert service.data_dir == Stack(StackSettings(home=closed / "devstack")).services["postgres"].data_dir
    assert service.data_dir != Stack(StackSettings(home=tmp_path / "other")).services["postgres"].data_dir
    # A server user who owns every folder on the way enters them: the state folder it is.
    owner = {**stranger, "user": closed.stat().st_uid}
    monkeypatch.setattr(type(service), "run_as", lambda self: owner)
    assert service.data_dir == service.state_dir / "data"
    # As its own user the server always lives in the state folder.
    monkeypatch.setattr(type(service), "run_as", lambda self: {})
    assert service.socket_dir == service.state_dir / "run"


def test_port_taken_names_postgres_port(tmp_path):
    (port,) = free_ports(1)
    service = Stack(StackSettings(home=tmp_path, postgres_port=port)).services["postgres"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(StackError) as error:
            service.spawn()
    assert str(error.value) == (f"port {port} for postgres is already in use by a process devstack did not start; "
                                "stop that process or choose another port (POSTGRES_PORT)")


def test_stop_is_a_fast_shutdown_of_the_postmaster_alone(postgres, monkeypatch):
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    monkeypatch.setattr(os, "killpg", lambda pid, signum: sent.append(("group", pid, signum)))
    postgres.signal_stop(4321)
    assert sent == [(4321, signal.SIGINT)]


def test_the_url_has_the_password_and_devstack_env_prints_it_redacted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEVSTACK_HOME", str(tmp_path))
    monkeypatch.setenv("POSTGRES_PORT", "15432")
    assert Stack().environment()["POSTGRES_URL"] == "postgresql://ctr@127.0.0.1:15432/ctr"  # before the first start
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "ctr.password").write_text("s3cret-Pass_word\n")
    assert Stack().environment()["POSTGRES_URL"] == "postgresql://ctr:s3cret-Pass_word@127.0.0.1:15432/ctr"

    assert cli.main(["env"]) == 0
    printed = capsys.readouterr().out
    assert "export POSTGRES_URL='postgresql://ctr:***@127.0.0.1:15432/ctr'" in printed.splitlines()
    assert "s3cret" not in printed


def test_the_password_file_is_its_owners_alone_and_kept(postgres):
    postgres.state_dir.mkdir(parents=True)
    postgres._write_password()
    first = postgres.password_file.read_text()
    postgres._write_password()
    assert postgres.password_file.read_text() == first and len(first) >= 32
    assert postgres.password_file.stat().st_mode & 0o777 == 0o600

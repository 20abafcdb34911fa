"""Safe defaults and start-up errors: private data dir, refusals without --init, one-line errors.

None of these starts a server that serves: each runs the command and reads what it printed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

from tests.harness import Postgres, artifactd_cmd, free_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*artifactd_cmd(), *args], env=env or clean_env(),
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "listening" not in result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_admin_command_refuses_a_missing_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "typo"
    result = run("api-token", "create", "--data-dir", str(data))
    assert_one_line_error(result, "no data dir at", str(data), "--init")
    assert not data.exists()
    for command in (("api-token", "list"), ("api-token", "revoke", "0" * 16), ("migrate",)):
        assert_one_line_error(run(*command, "--data-dir", str(data)), "no data dir")
    assert not data.exists()


def test_admin_command_refuses_a_directory_that_is_not_a_data_dir(tmp_path: Path) -> None:
    result = run("api-token", "create", "--data-dir", str(tmp_path))
    assert_one_line_error(result, "is not an artifactd data dir")
    assert not (tmp_path / "artifactd.db").exists()


def test_admin_command_refuses_an_empty_postgresql_database(tmp_path: Path, postgres: Postgres) -> None:
    url = postgres.new_database()
    env = clean_env(ARTIFACTD_DATABASE_URL=url)
    (tmp_path / "d").mkdir()
    refused = run("api-token", "create", "--data-dir", str(tmp_path / "d"), env=env)
    assert_one_line_error(refused, "has no artifactd schema", "--init")
    created = run("api-token", "create", "--init", "--data-dir", str(tmp_path / "d"), env=env)
    assert created.returncode == 0, created.stderr
    assert run("api-token", "list", "--data-dir", str(tmp_path / "d"), env=env).returncode == 0


def test_init_creates_a_private_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    result = run("api-token", "create", "--init", "--json", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700
    database = data / "artifactd.db"
    assert mode(database) == 0o600
    for sidecar in data.glob("artifactd.db*"):
        assert mode(sidecar) == 0o600, sidecar
    # Once made, the data dir is accepted without --init.
    listed = run("api-token", "list", "--json", "--data-dir", str(data))
    assert listed.returncode == 0 and '"permission": "edit"' in listed.stdout
    assert "accessible to other users" not in listed.stderr


def test_a_data_dir_others_can_read_is_warned_about(tmp_path: Path) -> None:
    data = tmp_path / "shared"
    assert run("api-token", "create", "--init", "--data-dir", str(data)).returncode == 0
    data.chmod(0o755)
    (data / "artifactd.db").chmod(0o644)
    listed = run("api-token", "list", "--data-dir", str(data))
    assert listed.returncode == 0
    assert f"the data dir {data} is accessible to other users (mode 0755): chmod 700" in listed.stderr
    assert "the database" in listed.stderr and "chmod 600" in listed.stderr


def test_serve_reports_a_taken_port_before_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--data-dir", str(tmp_path / "d"), "--port", str(port))
    assert_one_line_error(result, f"port {port}", "already in use")


def test_serve_reports_a_taken_metrics_port_before_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
                     "--metrics-port", str(port))
    assert_one_line_error(result, f"port {port}", "already in use")


def test_with_json_logs_a_start_up_error_is_a_json_line_too(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--log-format", "json", "--data-dir", str(tmp_path / "d"), "--port", str(port))
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["message"] for r in records if r["level"] == "ERROR"] == [f"port {port} on 127.0.0.1 is already in use"]


def test_serve_reports_a_data_dir_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = run("serve", "--data-dir", str(tmp_path / "file" / "data"), "--port", str(free_port()))
    assert_one_line_error(result, "cannot create the data dir", "Not a directory")


def test_serve_reports_a_missing_postgresql_driver(tmp_path: Path) -> None:
    # A package that fails to import as a missing one does: what a machine without psycopg sees.
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
    )
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")]),
        ARTIFACTD_DATABASE_URL="postgresql://artifactd:hunter2@127.0.0.1:5432/artifactd",
    )
    result = run("serve", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()), env=env)
    assert_one_line_error(result, "PostgreSQL driver is not installed", "artifactd[postgres]")


def test_serve_reports_an_unreachable_database_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://artifactd:hunter2@127.0.0.1:{free_port()}/artifactd"
    result = run("serve", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
                 env=clean_env(ARTIFACTD_DATABASE_URL=url))
    assert_one_line_error(result, "cannot use the database", "127.0.0.1")
    assert "hunter2" not in result.stderr


def test_unknown_environment_variables_are_warned_about(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the warnings come first; a taken port ends the run early
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = clean_env(ARTIFACTD_MAX_REPO_BYTE="1GB", ARTIFACTD_WHATEVER="1", ARTIFACTD_URL="http://x")
        result = run("serve", "--data-dir", str(tmp_path / "d"), "--port", str(taken.getsockname()[1]),
                     env=env)
    assert "unknown environment variable ARTIFACTD_MAX_REPO_BYTE" in result.stderr
    assert "did you mean ARTIFACTD_MAX_REPO_BYTES?" in result.stderr
    assert "unknown environment variable ARTIFACTD_WHATEVER is ignored\n" in result.stderr
    assert "ARTIFACTD_URL" not in result.stderr  # read by the client commands


def test_non_loopback_host_without_public_url_gets_a_hint(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hinted = run("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), "--port", str(port))
        quiet = run("serve", "--host", "0.0.0.0", "--public-url", "https://git.example.test",
                    "--data-dir", str(tmp_path / "d"), "--port", str(port))
        hosted = run("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), "--port", str(port),
                     env=clean_env(ARTIFACTD_REMOTE_TEMPLATE="https://{account_id}.git.example.test/{repo}.git"))
    assert "without a public URL" in hinted.stderr and "--public-url" in hinted.stderr
    assert "without a public URL" not in quiet.stderr
    assert "without a public URL" not in hosted.stderr  # remotes do not use the public URL


def test_unknown_log_level_is_refused(tmp_path: Path) -> None:
    result = run("serve", "--data-dir", str(tmp_path / "d"), env=clean_env(ARTIFACTD_LOG_LEVEL="loud"))
    assert result.returncode == 2 and "log_level must be one of" in result.stderr


def test_tls_cert_without_key_is_refused(tmp_path: Path) -> None:
    result = run("serve", "--tls-cert", str(tmp_path / "cert.pem"), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "tls_cert and tls_key go together" in result.stderr


def test_unreadable_tls_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = run("serve", "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
                 "--data-dir", str(tmp_path / "d"), "--port", str(free_port()))
    assert_one_line_error(result, "cannot read the TLS certificate file")


# Migrations under a lock: a second migrator waits for the first instead of racing it.


def start_migrate(data: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*artifactd_cmd(), "migrate", "--init", "--json", "--data-dir", str(data)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_waiting(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "waiting for another process to finish migrating" in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"migrate did not wait for the lock (exit {proc.poll()})")


def test_sqlite_migration_waits_for_the_lock(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    lock = os.open(data / "artifactd.db.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    proc = start_migrate(data, clean_env())
    try:
        wait_until_waiting(proc)
        assert proc.poll() is None  # still blocked: nothing was migrated beside the holder
    finally:
        os.close(lock)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert '"changed": true' in stdout
    assert '"changed": false' in run("migrate", "--json", "--data-dir", str(data)).stdout


def test_postgres_migration_waits_for_the_advisory_lock(tmp_path: Path, postgres: Postgres) -> None:
    import psycopg

    from artifactd.storage.db import PG_MIGRATION_LOCK_KEY

    url = postgres.new_database()
    env = clean_env(ARTIFACTD_DATABASE_URL=url)
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (PG_MIGRATION_LOCK_KEY,))
        proc = start_migrate(tmp_path / "d", env)
        try:
            wait_until_waiting(proc)
            assert proc.poll() is None
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (PG_MIGRATION_LOCK_KEY,))
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout
    assert '"changed": true' in stdout


def test_two_nodes_migrating_one_fresh_database_at_once(tmp_path: Path, postgres: Postgres) -> None:
    """Both succeed and exactly one of them did the upgrade."""
    url = postgres.new_database()
    env = clean_env(ARTIFACTD_DATABASE_URL=url)
    procs = [start_migrate(tmp_path / f"node{i}", env) for i in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sorted(out.count('"changed": true') for out, _ in outputs) == [0, 1]

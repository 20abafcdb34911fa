"""``artifactd backup`` and ``artifactd restore``, end to end (docs/backup.md).

A real server is backed up while a client keeps pushing to it; the backup is restored into
a new data dir (and database) and served by a new server, and the old API token, repo
tokens, refs, forks, settings and list cursors are checked to work there. SQLite and
PostgreSQL, a directory and a SeaweedFS bucket prefix, and each engine restored into the
other (the metadata dump is portable). Then every way a backup or a restore is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from artifactd import Artifacts
from artifactd.config import load_settings
from artifactd.errors import Code
from artifactd.services.backend import Backend
from artifactd.services.backup import BackupError, restore_backup, take_backup
from artifactd.storage.backupstore import DirectoryStore, open_store
from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Postgres, Server, artifactd_cmd, free_port, start_server
from tests.seaweed import SeaweedFS
from tests.seed import clone, push


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ARTIFACTD_", "AWS_"))}
    return subprocess.run([*artifactd_cmd(), *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Callable[[str], Server]]:
    """A source server per database, started when a test first asks for it."""
    started: dict[str, Server] = {}

    def get(database: str) -> Server:
        if database not in started:
            url = request.getfixturevalue("postgres").new_database() if database == "postgres" else None
            started[database] = start_server(tmp_path_factory.mktemp(f"backup-src-{database}"),
                                             database_url=url)
        return started[database]

    yield get
    for server in started.values():
        server.stop()


@dataclass
class Pusher:
    """Pushes a new commit to ``repo``'s main again and again, recording each acknowledged one."""

    git: Git
    repo: Repo
    work: Path
    acknowledged: list[str]
    attempted: list[str]
    stop: threading.Event
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        number = 0
        while not self.stop.is_set():
            number += 1
            sha = self.git.commit_files(self.work, {f"push-{number}.txt": f"{number}\n"}, f"push {number}")
            self.attempted.append(sha)
            # Two refs in one atomic push: a backup holding half of it would show them apart.
            done = self.git.run("-c", bearer(self.repo.token), "push", "-q", "--atomic",
                                self.repo.remote, "HEAD:refs/heads/main", "HEAD:refs/heads/mirror",
                                cwd=self.work, check=False)
            if done.returncode == 0:
                self.acknowledged.append(sha)

    def wait_for(self, count: int) -> None:
        while len(self.acknowledged) < count:
            assert self.thread is not None and self.thread.is_alive()
            self.stop.wait(0.01)

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=120)


def serve_restored(data_dir: Path, source: Server, database_url: str | None) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    if database_url:
        env["ARTIFACTD_DATABASE_URL"] = database_url
    restored = Server(data_dir=data_dir, port=free_port(), env=env, account_id=source.account_id,
                      token=source.token, read_token=source.read_token)
    restored.start()
    return restored


def moved(repo: Repo, server: Server) -> Repo:
    """The same repo as seen through another server."""
    return Repo(server, repo.name, repo.id, repo.remote.replace(repo.server.url, server.url),
                repo.token)


# Each engine as the source and as the target, each kind of destination: two runs cover
# them all (and both cross-engine restores) at half the time of the full product.
COMBINATIONS = [
    ("sqlite", "dir", "postgres"),
    ("postgres", "s3", "sqlite"),
]


@pytest.mark.parametrize(("source_db", "where", "target_db"), COMBINATIONS,
                         ids=[f"{s}-{w}-{t}" for s, w, t in COMBINATIONS])
def test_backup_while_pushing_then_restore_and_serve(
    source_db: str, where: str, target_db: str, sources: Callable[[str], Server],
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: str,
) -> None:
    source = sources(source_db)
    git = Git(tmp_path / "home")
    # A repo with two branches and a tag, its fork, a read-only repo with a description.
    app = create_repo(source, f"{unique_name}-app", description="the app")
    work = tmp_path / "app"
    first = git.new_work(work, {"README.md": "# app\n", "src/main.py": "print('hi')\n"})
    git.commit_files(work, {"feature.txt": "wip\n"}, "feature")
    git.run("branch", "feature", cwd=work)
    git.run("reset", "-q", "--hard", first, cwd=work)
    git.run("tag", "-a", "v1", "-m", "v1", cwd=work)
    push(git, app, work, "refs/heads/main", "refs/heads/feature", "refs/tags/v1")
    read_token = app.mint("read")["plaintext"]
    with Artifacts(source.url, source.account_id, source.token) as client:
        fork_result = client.get(app.name).fork(f"{unique_name}-fork")
        listed = client.list(limit=1)
        assert listed.cursor
        second_page = [repo.name for repo in client.list(limit=1, cursor=listed.cursor).repos]
    fork = Repo(source, f"{unique_name}-fork", fork_result.id, fork_result.remote, fork_result.token)
    locked = create_repo(source, f"{unique_name}-ro", read_only=True, description="frozen")
    app_refs = app.refs()

    busy = create_repo(source, f"{unique_name}-busy")
    busy_work = tmp_path / "busy"
    git.new_work(busy_work)
    pusher = Pusher(git, busy, busy_work, [], [], threading.Event())
    pusher.start()

    env: dict[str, str] = {}
    if where == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        location = f"s3://{seaweedfs.new_bucket('backup')}/nightly/one"
        env = seaweedfs.env()
        endpoint = ["--endpoint-url", seaweedfs.endpoint_url]
    else:
        location, endpoint = str(tmp_path / "backup"), []
    source_env = {"ARTIFACTD_DATABASE_URL": source.env["ARTIFACTD_DATABASE_URL"]} \
        if "ARTIFACTD_DATABASE_URL" in source.env else {}
    try:
        pusher.wait_for(2)
        acknowledged_before = pusher.acknowledged[-1]
        done = cli("backup", location, "--data-dir", str(source.data_dir), *endpoint, "--json",
                   env={**env, **source_env})
        assert done.returncode == 0, done.stderr
    finally:
        pusher.finish()
    summary = json.loads(done.stdout)
    assert summary["repos"] >= 3 and summary["tables"]["api_tokens"] >= 2

    target_url = request.getfixturevalue("postgres").new_database() if target_db == "postgres" else None
    data_dir = tmp_path / "restored"
    args = ["restore", location, "--data-dir", str(data_dir), *endpoint, "--json"]
    if target_url:
        args += ["--database-url", target_url]
    done = cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["migrated_to"] == summary["schema_revision"]

    restored = serve_restored(data_dir, source, target_url)
    try:
        # The old API token and the repos' settings; a list cursor of the old server.
        with Artifacts(restored.url, restored.account_id, restored.token) as client:
            info = client.info(app.name)
            assert info.description == "the app"
            assert client.info(locked.name).read_only is True
            assert client.info(locked.name).description == "frozen"
            assert [r.name for r in client.list(limit=1, cursor=listed.cursor).repos] == second_page
        # Every ref, through git, with the old repo tokens (write, read) and the fork's own.
        app_there = moved(app, restored)
        assert app_there.refs() == app_refs
        copy = clone(git, app_there, tmp_path / "app-clone", token=read_token)
        assert (copy / "src" / "main.py").read_text() == "print('hi')\n"
        git.run("fsck", "--strict", "--no-progress", cwd=copy)
        fork_copy = clone(git, moved(fork, restored), tmp_path / "fork-clone")
        # The fork's packs that are its parent's are one file again (hard links), not copies.
        app_packs = {p.name: p.stat().st_ino for p in (moved(app, restored).git_dir / "objects" / "pack").glob("*.pack")}
        fork_packs = {p.name: p.stat().st_ino for p in (moved(fork, restored).git_dir / "objects" / "pack").glob("*.pack")}
        assert fork_packs
        # Laid out as the store lays out new repos (the dense layout: objects -> .).
        assert os.readlink(moved(fork, restored).git_dir / "objects") == "."
        assert all(app_packs[name] == inode for name, inode in fork_packs.items() if name in app_packs)
        assert git.out("rev-parse", "HEAD", cwd=fork_copy) == app_refs["refs/heads/main"]
        # The push acknowledged before the backup began is there; whatever came after is
        # there whole (a commit that was pushed, all its history) or not at all.
        busy_copy = clone(git, moved(busy, restored), tmp_path / "busy-clone")
        head = git.out("rev-parse", "HEAD", cwd=busy_copy)
        assert head in pusher.attempted
        git.run("merge-base", "--is-ancestor", acknowledged_before, head, cwd=busy_copy)
        assert moved(busy, restored).refs()["refs/heads/mirror"] == head
        git.run("fsck", "--strict", "--no-progress", cwd=busy_copy)
        # The restored deployment takes writes: a push with the old write token.
        new = git.commit_files(copy, {"after.txt": "restored\n"}, "after the restore")
        git.run("-c", bearer(app.token), "push", "-q", app_there.remote, "HEAD:refs/heads/main",
                cwd=copy)
        assert app_there.refs()["refs/heads/main"] == new
        refused = git.run("-c", bearer(locked.token), "push", "-q",
                          moved(locked, restored).remote, "HEAD:refs/heads/main", cwd=copy,
                          check=False)
        assert refused.returncode != 0
        # Limits count what the restored disk holds.
        with httpx.Client(base_url=restored.ns_url(), headers={"Authorization": f"Bearer {restored.token}"}) as c:
            size = c.get(f"/repos/{busy.name}").json()["result"].get("size_bytes")
        if size is not None:
            assert size > 0
    finally:
        restored.stop()


# -- refused backups and restores -------------------------------------------------------
# In-process through the service functions (a real data dir, database and bucket; the CLI's
# start-up would cost seconds per case), plus one run of each command for its exit status.


@pytest.fixture(scope="module")
def small_backup(sources: Callable[[str], Server], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backup (a directory) of the SQLite source with one pushed repo; tests copy it."""
    source = sources("sqlite")
    root = tmp_path_factory.mktemp("small-backup")
    git = Git(root / "home")
    repo = create_repo(source, "backup-small")
    git.new_work(root / "work", {"data.bin": os.urandom(4096)})
    push(git, repo, root / "work", "HEAD:refs/heads/main")
    done = cli("backup", str(root / "backup"), "--data-dir", str(source.data_dir))
    assert done.returncode == 0, done.stderr
    return root / "backup"


@pytest.fixture(scope="module")
def source_backend(sources: Callable[[str], Server]) -> Iterator[Backend]:
    backend = Backend.open(load_settings(flags={"data_dir": str(sources("sqlite").data_dir)}, env={}),
                           run_migrations=False)
    yield backend
    backend.close()


def copy_of(backup: Path, tmp_path: Path) -> Path:
    target = tmp_path / "backup-copy"
    shutil.copytree(backup, target)
    return target


def index(backup: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (backup / "files.jsonl").read_text().splitlines()]


def blob(backup: Path, sha: object) -> Path:
    return backup / "blobs" / str(sha)[:2] / str(sha)


def refused_restore(backup: Path, tmp_path: Path, database_url: str | None = None) -> BackupError:
    target = tmp_path / "never"
    with pytest.raises(BackupError) as refused:
        restore_backup(DirectoryStore(backup), target, database_url)
    assert not target.exists(), "a refused restore wrote its target"
    return refused.value


def test_backup_refuses_a_destination_that_is_not_empty(
    sources: Callable[[str], Server], tmp_path: Path,
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine\n")
    done = cli("backup", str(dest), "--data-dir", str(sources("sqlite").data_dir))
    assert done.returncode == 1
    assert "[12500]" in done.stderr and "is not empty" in done.stderr
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    bad = cli("backup", "ftp://example.com/x", "--data-dir", str(sources("sqlite").data_dir))
    assert bad.returncode == 2 and "unsupported backup location" in bad.stderr


def test_backup_refuses_an_unreachable_or_missing_bucket(
    source_backend: Backend, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    cases = [
        ("s3://no-such-bucket-here/x", seaweedfs.endpoint_url, "does not exist"),
        (f"s3://{seaweedfs.new_bucket('closed')}/x", f"http://127.0.0.1:{free_port()}", "cannot reach"),
    ]
    for location, endpoint, reason in cases:
        with pytest.raises(BackupError) as refused:
            take_backup(source_backend, open_store(location, endpoint_url=endpoint))
        assert refused.value.code == Code.BACKUP_STORE_UNAVAILABLE and reason in refused.value.message
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    bucket = seaweedfs.new_bucket("creds")
    with pytest.raises(BackupError) as refused:
        take_backup(source_backend, open_store(f"s3://{bucket}/x", endpoint_url=seaweedfs.endpoint_url))
    assert "credentials" in refused.value.message and "wrong-secret" not in refused.value.message


def test_backup_into_a_bucket_prefix_that_is_not_empty_is_refused(
    source_backend: Backend, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    bucket = seaweedfs.new_bucket("taken")
    seaweedfs.client().put_object(Bucket=bucket, Key="nightly/manifest.json", Body=b"{}")
    with pytest.raises(BackupError) as refused:
        take_backup(source_backend, open_store(f"s3://{bucket}/nightly", endpoint_url=seaweedfs.endpoint_url))
    assert refused.value.code == Code.BACKUP_TARGET_NOT_EMPTY
    listed = seaweedfs.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["nightly/manifest.json"]


def test_restore_refuses_a_corrupt_pack_naming_the_file(small_backup: Path, tmp_path: Path) -> None:
    backup = copy_of(small_backup, tmp_path)
    pack = next(e for e in index(backup) if str(e["path"]).endswith(".pack"))
    path = blob(backup, pack["sha256"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    error = refused_restore(backup, tmp_path)
    assert error.code == Code.BACKUP_CORRUPT
    assert str(pack["path"]) in error.message and "corrupt" in error.message
    done = cli("restore", str(backup), "--data-dir", str(tmp_path / "cli"))
    assert done.returncode == 1 and "[12503]" in done.stderr and str(pack["path"]) in done.stderr
    assert not (tmp_path / "cli").exists()
    with pytest.raises(BackupError):
        restore_backup(DirectoryStore(backup), tmp_path / "unused", check_only=True)


def test_restore_refuses_truncated_files(small_backup: Path, tmp_path: Path) -> None:
    backup = copy_of(small_backup, tmp_path)
    table = next(e for e in index(backup) if e["path"] == "metadata/api_tokens.jsonl")
    path = blob(backup, table["sha256"])
    path.write_bytes(path.read_bytes()[:10])
    assert "metadata/api_tokens.jsonl is corrupt or truncated" in refused_restore(backup, tmp_path).message
    listing = backup / "files.jsonl"
    listing.write_text(listing.read_text()[:-20])
    assert "files.jsonl is corrupt or truncated" in refused_restore(backup, tmp_path).message
    (backup / "manifest.json").write_text('{"format": "artifactd-backup", "format')
    assert "manifest.json is truncated or malformed" in refused_restore(backup, tmp_path).message
    (backup / "manifest.json").unlink()
    error = refused_restore(backup, tmp_path)
    assert error.code == Code.BACKUP_NOT_FOUND and "no manifest.json" in error.message


def test_restore_refuses_a_backup_of_a_newer_schema(small_backup: Path, tmp_path: Path) -> None:
    backup = copy_of(small_backup, tmp_path)
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["schema_revision"] = "0099_from_the_future"
    (backup / "manifest.json").write_text(json.dumps(manifest))
    error = refused_restore(backup, tmp_path)
    assert error.code == Code.BACKUP_SCHEMA_NEWER
    assert "0099_from_the_future" in error.message and "newer" in error.message


def test_restore_refuses_paths_outside_the_backup_shapes(small_backup: Path, tmp_path: Path) -> None:
    """An index is data, not a list of paths to write: a crafted one reaches no path."""
    backup = copy_of(small_backup, tmp_path)
    entries = index(backup)
    victim = entries[-1]
    for path in ("repos/../../../etc/passwd", f"repos/00/00/{'0' * 32}.git/../../x",
                 f"repos/ab/cd/{'0' * 32}.git/HEAD", "metadata/../x.jsonl", "/etc/passwd",
                 f"repos/00/00/{'0' * 32}.git/hooks/pre-receive"):
        victim["path"] = path
        listing = "".join(json.dumps(e) + "\n" for e in entries).encode()
        (backup / "files.jsonl").write_bytes(listing)
        manifest = json.loads((backup / "manifest.json").read_text())
        manifest["index"]["sha256"] = hashlib.sha256(listing).hexdigest()
        manifest["index"]["size"] = len(listing)
        (backup / "manifest.json").write_text(json.dumps(manifest))
        assert "is not a" in refused_restore(backup, tmp_path).message, path


def test_restore_refuses_targets_that_are_not_empty(small_backup: Path, tmp_path: Path,
                                                    postgres: Postgres) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "artifactd.db").write_text("")
    with pytest.raises(BackupError) as refused:
        restore_backup(DirectoryStore(small_backup), taken)
    assert refused.value.code == Code.RESTORE_TARGET_NOT_EMPTY
    assert [p.name for p in taken.iterdir()] == ["artifactd.db"]
    url = postgres.new_database()
    restore_backup(DirectoryStore(small_backup), tmp_path / "one", url)
    error = refused_restore(small_backup, tmp_path, url)
    assert error.code == Code.RESTORE_TARGET_NOT_EMPTY and "database is not empty" in error.message


def test_check_verifies_without_writing(small_backup: Path) -> None:
    done = cli("restore", str(small_backup), "--check", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["migrated_to"] is None and summary["repos"] >= 1


def test_a_directory_backup_is_private(small_backup: Path) -> None:
    """It holds what the database holds (token hashes, the cursor key, webhook secrets)."""
    for path in [small_backup, *small_backup.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_restored_events_sort_below_what_a_fresh_postgres_cluster_writes() -> None:
    """Outbox seqs from a PostgreSQL cluster with high transaction ids are renumbered by
    rank on a restore into PostgreSQL, with cursors and delivery-log seqs moved alike: a
    fresh cluster's events (seq = its low transaction id << 16) must sort after every
    restored one, or a restored cursor would skip them all."""
    from artifactd.services.backup.restore import OutboxRenumbering

    old = [(9_000_000 << 16) + n for n in (0, 1)] + [9_000_007 << 16, 9_000_020 << 16]
    renumbering = OutboxRenumbering(list(reversed(old)))
    assert [renumbering.event(seq) for seq in old] == [1, 2, 3, 4]
    assert renumbering.position(old[1]) == 2  # a cursor on an event: next is the third
    assert renumbering.position(old[2] - 1) == 2  # between events
    assert renumbering.position(0) == 0
    assert renumbering.position((9_000_021 << 16) - 1) == 4  # a new subscription's cursor
    assert renumbering.event(old[-1]) < 750 << 16  # below a fresh cluster's first seqs

"""ArtifactFS on a real FUSE mount against a real artifactd: the guide's commands, metadata
without blob bytes, batched hydration, the one-shot form, and bad input."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server

pytestmark = pytest.mark.skipif(
    not (os.access("/dev/fuse", os.R_OK | os.W_OK) and shutil.which("fusermount3")),
    reason="needs /dev/fuse and fusermount3 (apt-get install fuse3)")
pyfuse3 = pytest.importorskip("pyfuse3")

# The guide's commands (spec, "ArtifactFS"), verbatim but for the host: the test server
# speaks plain http on loopback, and the mount root is the test's directory, not /tmp.
GUIDE = r"""
export ARTIFACTS_TOKEN_SECRET="${ARTIFACTS_TOKEN%%\?expires=*}"
export ARTIFACTS_AUTH_REMOTE="http://x:${ARTIFACTS_TOKEN_SECRET}@${ARTIFACTS_REMOTE#http://}"

artifact-fs add-repo \
  --name starter-repo \
  --remote "$ARTIFACTS_AUTH_REMOTE" \
  --branch main \
  --mount-root "$ROOT"

artifact-fs daemon --root "$ROOT" &
echo "$!" > "$ROOT/daemon.pid"
until mountpoint -q "$ROOT/starter-repo"; do sleep 0.05; done  # not in the guide: the wait

ls "$ROOT/starter-repo/"
cat "$ROOT/starter-repo/README.md"
git -C "$ROOT/starter-repo" log --oneline -5
"""


@pytest.fixture
def fs_env(tmp_path: Path) -> dict[str, str]:
    """The environment with ``artifact-fs`` on PATH (a shim when the package is not reinstalled)."""
    env = {**os.environ, "ARTIFACT_FS_CACHE_DIR": str(host_cache(tmp_path))}
    if not shutil.which("artifact-fs"):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "artifact-fs"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m artifactd.fs "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def host_cache(tmp_path: Path) -> Path:
    """The test's host blob cache (``ARTIFACT_FS_CACHE_DIR``): never the user's own."""
    return tmp_path / "cache"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A mount root whose mounts, daemon and credential cache are gone after the test."""
    monkeypatch.setenv("ARTIFACT_FS_CACHE_DIR", str(host_cache(tmp_path)))
    folder = tmp_path / "root"
    folder.mkdir()
    yield folder
    pid_file = folder / "daemon.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    for entry in folder.iterdir():
        if os.path.ismount(entry):
            subprocess.run(["fusermount3", "-u", "-z", str(entry)], capture_output=True)
    for pid_path in (folder / ".artifact-fs" / "run").glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_path.read_text()), signal.SIGTERM)
    socket = folder / ".artifact-fs" / "run" / "credential-socket"
    if socket.exists():
        subprocess.run(["git", "credential-cache", f"--socket={socket}", "exit"], capture_output=True)


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


def make_repo(server: Server, name: str, tmp_path: Path, files: dict[str, bytes]) -> tuple[str, str]:
    """A repo on the server with ``files`` in one commit on main; returns (remote, token)."""
    created = server.client().post("/repos", json={"name": name}).json()
    assert created["success"], created
    remote, token = created["result"]["remote"], created["result"]["token"]
    work = tmp_path / f"src-{name}"
    work.mkdir()
    for path, data in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(data)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first files", cwd=work)
    git("push", "-q", auth_remote(remote, token), "main", cwd=work)
    return remote, token


def auth_remote(remote: str, token: str) -> str:
    return remote.replace("http://", f"http://x:{token.split('?expires=')[0]}@", 1)


def cached_blobs(root: Path) -> list[Path]:
    """The blob files of the host cache the mounts under ``root`` (the fixture) use."""
    return [p for p in (host_cache(root.parent) / "blobs").rglob("*") if p.is_file()]


def wait_cached(root: Path, count: int) -> list[Path]:
    """The cache's files once there are ``count`` (blobs reach the disk behind the reads)."""
    deadline = time.monotonic() + 30
    while len(found := cached_blobs(root)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def local_blob_count(root: Path, name: str) -> int:
    out = git("--git-dir", str(root / ".artifact-fs" / "git" / name / ".git"), "cat-file",
              "--batch-all-objects", "--batch-check=%(objecttype)")
    return out.split().count("blob")


def fs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["artifact-fs", *args], env=env, capture_output=True, text=True, timeout=120)


def start_daemon(env: dict[str, str], root: Path, name: str, *, landed: bool = True) -> subprocess.Popen[bytes]:
    """The daemon, once ``name`` is mounted; ``landed``: and its clone is in (a repo added
    with no daemon running is mounted root first, its clone behind the mount)."""
    daemon = subprocess.Popen(["artifact-fs", "daemon", "--root", str(root)], env=env)
    (root / "daemon.pid").write_text(str(daemon.pid))
    deadline = time.monotonic() + 60
    while not os.path.ismount(root / name):
        assert daemon.poll() is None, "the daemon exited before mounting"
        assert time.monotonic() < deadline, "not mounted after 60 s"
        time.sleep(0.05)
    if landed:
        wait_landed(root, name)
    return daemon


def wait_landed(root: Path, name: str) -> None:
    """Until a root-first mount's clone has landed (or failed): at once for any other mount."""
    log = root / ".artifact-fs" / "run" / f"{name}.log"
    deadline = time.monotonic() + 60
    while "root-first: mounted" in (text := log.read_text() if log.exists() else "") and not (
            "root-first: landed" in text or "root-first: failed" in text):
        assert time.monotonic() < deadline, "the clone did not land after 60 s"
        time.sleep(0.02)


def stop_daemon(daemon: subprocess.Popen[bytes], root: Path, name: str) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    assert not os.path.ismount(root / name)


FILES = {"README.md": b"# starter\nhello from the mount\n", "src/app.py": b"print('hi')\n" * 50,
         "src/lib/util.py": b"X = 1\n", "bin/run.sh": b"#!/bin/sh\necho run\n", "data/big.bin": os.urandom(300_000)}


def test_guide_commands_mount_read_and_stop_cleanly(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token = make_repo(sqlite_server, "starter-repo", tmp_path, FILES)
    env = {**fs_env, "ARTIFACTS_REMOTE": remote, "ARTIFACTS_TOKEN": token, "ROOT": str(root)}
    # Output to files: the backgrounded daemon keeps its stdout open, as in a terminal.
    out, err = tmp_path / "guide.out", tmp_path / "guide.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        code = subprocess.run(["bash", "-euc", GUIDE], env=env, stdout=stdout, stderr=stderr, timeout=180).returncode
    assert code == 0, err.read_text()
    printed = out.read_text()
    assert "README.md" in printed and "src" in printed
    assert "hello from the mount" in printed
    assert "first files" in printed  # git log --oneline -5 inside the mount
    mount = root / "starter-repo"
    assert (mount / "src" / "lib" / "util.py").read_bytes() == b"X = 1\n"
    assert (mount / "data" / "big.bin").read_bytes() == FILES["data/big.bin"]
    assert os.access(mount / "bin" / "run.sh", os.X_OK) is False  # 100644 in git: not executable
    # The token is in no file of the root and in no process's arguments.
    secret = token.split("?expires=")[0]
    for path in root.rglob("*"):
        if path.is_file() and not path.is_relative_to(mount):
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    # SIGTERM: the daemon unmounts and exits 0.
    pid = int((root / "daemon.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while os.path.ismount(mount) or (Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)):
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.05)
    assert not list((root / ".artifact-fs" / "run").glob("*.pid"))


def _state(pid: int) -> str:
    try:
        return "zombie" if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z" else "running"
    except OSError:
        return "zombie"


def test_metadata_fetches_no_blob_bytes(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    assert fs(fs_env, "add-repo", "--name", unique_name, "--remote", auth_remote(remote, token),
              "--branch", "main", "--mount-root", str(root)).returncode == 0
    daemon = start_daemon(fs_env, root, unique_name)
    mount = root / unique_name
    listing = subprocess.run(["ls", "-lR", str(mount)], capture_output=True, text=True, check=True).stdout
    assert "big.bin" in listing
    for path, data in FILES.items():
        info = os.stat(mount / path)
        assert info.st_size == len(data) and stat.S_ISREG(info.st_mode)
    du = subprocess.run(["du", "-sb", str(mount)], capture_output=True, text=True, check=True).stdout
    assert int(du.split()[0]) >= sum(len(d) for d in FILES.values())
    found = subprocess.run(["find", str(mount), "-size", "+100k"], capture_output=True, text=True, check=True)
    assert found.stdout.strip().endswith("data/big.bin")
    status = git("-C", str(mount), "status", "--porcelain")
    assert status == ""  # clean, without reading a file
    assert cached_blobs(root) == []
    assert local_blob_count(root, unique_name) == 0
    stop_daemon(daemon, root, unique_name)


def test_reads_are_batched_into_one_fetch(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    files = {f"pkg/mod{i:03}.py": f"VALUE = {i}\n".encode() for i in range(60)}
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, files)
    assert fs(fs_env, "add-repo", "--name", unique_name, "--remote", auth_remote(remote, token),
              "--branch", "main", "--mount-root", str(root)).returncode == 0
    packs = root / ".artifact-fs" / "git" / unique_name / ".git" / "objects" / "pack"
    daemon = start_daemon(fs_env, root, unique_name)  # the clone landed: its pack is there
    packs_before = len(list(packs.glob("*.pack")))
    for path, data in sorted(files.items()):
        assert (root / unique_name / path).read_bytes() == data
    # The first read fetched its own blob and queued the rest of its directory: the other 59
    # came in one background fetch (git alone would make 60 fetches, one pack each), over
    # HTTP without git (no pack in the clone).
    stats = json.loads((root / ".artifact-fs" / "run" / f"{unique_name}.stats").read_text())
    assert stats == {"fetches": 2, "blobs": 60}
    assert len(list(packs.glob("*.pack"))) == packs_before
    assert len(wait_cached(root, 60)) == 60
    stop_daemon(daemon, root, unique_name)


def test_oneshot_mount_and_unmount(sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, FILES)
    target = root / "work"
    result = subprocess.run([sys.executable, "-m", "artifactd", "mount", auth_remote(remote, token), str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (target / "README.md").read_bytes() == FILES["README.md"]
    assert "first files" in git("-C", str(target), "log", "--oneline", "-5")
    pid = int((root / ".artifact-fs" / "run" / "work.pid").read_text())
    result = subprocess.run([sys.executable, "-m", "artifactd", "unmount", str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(target)
    assert not Path(f"/proc/{pid}").exists() or _state(pid) == "zombie"


@pytest.fixture(scope="module")
def small_repo(sqlite_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One repo for the bad-input cases (they must not get as far as changing it)."""
    return make_repo(sqlite_server, f"bad-input-{os.urandom(3).hex()}", tmp_path_factory.mktemp("bad"),
                     {"README.md": b"x\n"})


@pytest.mark.parametrize(("change", "message"), [
    ({"--remote": "not a url"}, "--remote must be an http(s) git URL"),
    ({"--remote": "ftp://host/x.git"}, "--remote must be an http(s) git URL"),
    ({"--name": "a/b"}, "is not a valid repo name"),
    ({"--name": ".."}, "is not a valid repo name"),
    ({"--name": "x..y"}, "is not a valid repo name"),
    ({"--branch": "-x"}, "is not a valid branch name"),
    ({"--branch": "no-such-branch"}, "does not exist on"),
    ({"--mount-root": "FILE"}, "is not a directory"),
    ({"--mount-root": "MISSING"}, "is not a directory"),
    ({"token": "art_v1_" + "0" * 40}, "refused the credentials"),
])
def test_bad_input_is_one_line_and_changes_nothing(
    small_repo: tuple[str, str], tmp_path: Path, root: Path, fs_env: dict[str, str],
    change: dict[str, str], message: str,
) -> None:
    remote, token = small_repo
    (tmp_path / "file").write_text("not a directory")
    args = {"--name": "repo", "--remote": auth_remote(remote, change.get("token", token)),
            "--branch": "main", "--mount-root": str(root)}
    args.update({k: v for k, v in change.items() if k.startswith("--")})
    args["--mount-root"] = {"FILE": str(tmp_path / "file"), "MISSING": str(tmp_path / "missing")}.get(
        args["--mount-root"], args["--mount-root"])
    result = fs(fs_env, "add-repo", *[x for pair in args.items() for x in pair])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert token.split("?expires=")[0] not in result.stderr + result.stdout
    assert not (root / "repo").exists()
    assert not list((root / ".artifact-fs" / "repos").glob("*")) if (root / ".artifact-fs").exists() else True


def test_plain_git_http_backend_remote(tmp_path: Path, root: Path, fs_env: dict[str, str]) -> None:
    """The same commands against C ``git http-backend``: sizes from its object-info, reads batched."""
    from tests.gitsource import GitSource

    source = GitSource(tmp_path / "upstream").start()
    try:
        work = tmp_path / "plain-work"
        work.mkdir()
        for path, data in FILES.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(data)
        git("init", "-q", "-b", "main", cwd=work)
        git("add", "-A", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "plain files", cwd=work)
        bare = source.root / "plain.git"
        git("clone", "-q", "--bare", str(work), str(bare))
        git("--git-dir", str(bare), "config", "uploadpack.allowFilter", "true")
        git("--git-dir", str(bare), "config", "uploadpack.allowAnySHA1InWant", "true")
        result = fs(fs_env, "add-repo", "--name", "plain", "--remote", f"{source.url}/plain.git",
                    "--branch", "main", "--mount-root", str(root))
        assert result.returncode == 0, result.stderr
        daemon = start_daemon(fs_env, root, "plain")
        mount = root / "plain"
        assert sorted(os.listdir(mount)) == [".git", "README.md", "bin", "data", "src"]
        assert os.stat(mount / "data" / "big.bin").st_size == len(FILES["data/big.bin"])
        assert git("-C", str(mount), "status", "--porcelain") == ""
        assert cached_blobs(root) == []
        assert (mount / "README.md").read_bytes() == FILES["README.md"]
        assert "plain files" in git("-C", str(mount), "log", "--oneline", "-5")
        stop_daemon(daemon, root, "plain")
    finally:
        source.stop()


def test_repo_commands_and_a_killed_daemon(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, {"README.md": b"x\n"})
    assert fs(fs_env, "add-repo", "--name", unique_name, "--remote", auth_remote(remote, token),
              "--branch", "main", "--mount-root", str(root)).returncode == 0
    listed = fs(fs_env, "list-repos", "--root", str(root)).stdout
    assert listed.split("\t")[:3] == [unique_name, "main", remote]  # the remote without its token
    daemon = start_daemon(fs_env, root, unique_name)
    assert "\tmounted (pid " in fs(fs_env, "status", "--root", str(root)).stdout
    refused = fs(fs_env, "remove-repo", "--name", unique_name, "--root", str(root))
    assert refused.returncode == 1 and "is mounted" in refused.stderr
    # SIGKILL: no cleanup code runs in the daemon, yet its mount process goes and unmounts.
    daemon.kill()
    daemon.wait()
    deadline = time.monotonic() + 60
    while os.path.ismount(root / unique_name):
        assert time.monotonic() < deadline, "the mount outlived its daemon"
        time.sleep(0.05)
    assert "not mounted" in fs(fs_env, "status", "--root", str(root)).stdout
    removed = fs(fs_env, "remove-repo", "--name", unique_name, "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    assert not (root / unique_name).exists()
    assert fs(fs_env, "list-repos", "--root", str(root)).stdout == ""


def test_revoked_token_gives_eio_and_add_repo_with_a_new_one_fixes_the_mount(
    sqlite_server: Server, unique_name: str, tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    remote, token = make_repo(sqlite_server, unique_name, tmp_path, {"a/one.txt": b"1\n", "b/two.txt": b"2\n"})
    assert fs(fs_env, "add-repo", "--name", unique_name, "--remote", auth_remote(remote, token),
              "--branch", "main", "--mount-root", str(root)).returncode == 0
    daemon = start_daemon(fs_env, root, unique_name)
    with sqlite_server.client() as api:
        revoked = api.post(f"/repos/{unique_name}/tokens/revoke", json={"token": token}).json()
        assert revoked["success"], revoked
        mount = root / unique_name
        with pytest.raises(OSError) as failed:
            (mount / "a" / "one.txt").read_bytes()
        assert failed.value.errno == 5  # EIO; the mount stays up
        assert os.path.ismount(mount) and sorted(os.listdir(mount)) == [".git", "a", "b"]
        fresh = api.post("/tokens", json={"repo": unique_name, "scope": "read", "ttl": 3600}).json()
        assert fresh["success"], fresh
    again = fs(fs_env, "add-repo", "--name", unique_name, "--remote",
               auth_remote(remote, fresh["result"]["plaintext"]), "--branch", "main", "--mount-root", str(root))
    assert again.returncode == 0, again.stderr
    assert (mount / "a" / "one.txt").read_bytes() == b"1\n"  # the running mount uses the new token
    stop_daemon(daemon, root, unique_name)


def test_server_going_away_fails_reads_with_eio_and_the_mount_stays_up(
    tmp_path: Path, root: Path, fs_env: dict[str, str]
) -> None:
    from tests.harness import start_server

    server = start_server(tmp_path / "data")
    try:
        remote, token = make_repo(server, "going", tmp_path, {"x/a.txt": b"a\n", "y/b.txt": b"b\n"})
        assert fs(fs_env, "add-repo", "--name", "going", "--remote", auth_remote(remote, token),
                  "--branch", "main", "--mount-root", str(root)).returncode == 0
        daemon = start_daemon(fs_env, root, "going")
        # Once the blob sizes are in (git status waits for the index they make), metadata
        # needs the server no more.
        subprocess.run(["git", "-C", str(root / "going"), "status", "--porcelain"], check=True,
                       capture_output=True, timeout=60)
    finally:  # the server goes away at once (SIGKILL), as in a crash
        assert server.process is not None
        server.process.kill()
        server.process.wait()
    mount = root / "going"
    with pytest.raises(OSError) as failed:
        (mount / "x" / "a.txt").read_bytes()
    assert failed.value.errno == 5
    assert os.path.ismount(mount) and os.stat(mount / "y" / "b.txt").st_size == 2
    stop_daemon(daemon, root, "going")

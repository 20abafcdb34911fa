"""The steps of a 10k root-first mount, for issue 15's mount-time rows (not a ``python -m
bench`` section: it writes nothing). Interleaved in one run on one server, ``N`` rounds:
the blobless clone (the floor), the root read alone (``rootfirst.read_root``: ``ls-refs``
and the ``filter tree:1`` fetch; this repo's root has directories only, so no
``object-info``), ``add-repo`` handed to a running daemon (the daemon's own account of it:
``hand-off NAME: planned, root read, mounted``), the one-shot ``artifactd mount`` (its
mount process's log line), and the interpreter start with and without ``site``.

    python -m bench.mount_steps [ROUNDS]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from bench.common import UNLIMITED, start_server, work_dir
from bench.mount import _git, _repo, _stop, _wait_mounted, make_source, timed


def main(rounds: int) -> dict[str, object]:
    from artifactd.fs import rootfirst
    from artifactd.fs.inputs import parse_remote
    from artifactd.fs.wire import Remote

    load_start = os.getloadavg()[0]
    work = work_dir("mount-steps-")
    os.environ["ARTIFACT_FS_CACHE_DIR"] = str(work / "cache")
    server = start_server(work / "data", extra_env=UNLIMITED)
    fs = [sys.executable, "-m", "artifactd.fs"]
    daemon = None
    rows: dict[str, list[float]] = {k: [] for k in ("blobless", "root_read", "handoff", "oneshot", "python",
                                                    "python_S")}
    logs: list[str] = []
    try:
        source = work / "source.git"
        make_source(source, 10_000)
        root = work / "root"
        root.mkdir()
        first = _repo(server, "first")
        _git(f"--git-dir={source}", "push", "-q", first, "main")
        subprocess.run([*fs, "add-repo", "--name", "first", "--remote", first, "--mount-root", str(root)],
                       check=True, capture_output=True)
        with open(work / "daemon.err", "wb") as err:
            daemon = subprocess.Popen([*fs, "daemon", "--root", str(root)], stderr=err)
        _wait_mounted(daemon, root / "first")
        for i in range(rounds):
            auth = _repo(server, f"h{i}")
            _git(f"--git-dir={source}", "push", "-q", auth, "main")
            rows["blobless"].append(timed(["git", "clone", "-q", "--filter=blob:none", "--no-checkout", auth,
                                           str(work / f"blobless{i}")]))
            remote = parse_remote(auth)
            started = time.perf_counter()
            connection = Remote(remote.url, remote.auth, 30)
            rootfirst.read_root(connection, "main")
            connection.close()
            rows["root_read"].append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run([*fs, "add-repo", "--name", f"h{i}", "--remote", auth, "--mount-root", str(root)],
                           check=True, capture_output=True)
            os.listdir(root / f"h{i}")
            rows["handoff"].append(time.perf_counter() - started)
            subprocess.run(["fusermount3", "-u", str(root / f"h{i}")], capture_output=True)
            target = work / f"oneshot{i}" / "mount"
            target.parent.mkdir()
            other = _repo(server, f"o{i}")
            _git(f"--git-dir={source}", "push", "-q", other, "main")
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "artifactd", "mount", other, str(target)], check=True,
                           capture_output=True)
            os.listdir(target)
            rows["oneshot"].append(time.perf_counter() - started)
            log = (target.parent / ".artifact-fs" / "run" / "mount.log").read_text()
            logs += [f"one-shot: {line.split('root-first: ')[1]}" for line in log.splitlines()
                     if "root-first: mounted" in line]
            subprocess.run([sys.executable, "-m", "artifactd", "unmount", str(target)], capture_output=True)
            socket = target.parent / ".artifact-fs" / "run" / "credential-socket"
            subprocess.run(["git", "credential-cache", f"--socket={socket}", "exit"], capture_output=True)
            rows["python"].append(timed([sys.executable, "-c", "pass"]))
            rows["python_S"].append(timed([sys.executable, "-S", "-c", "pass"]))
        _stop(daemon)
        daemon = None
        logs += [line for line in (work / "daemon.err").read_text().splitlines() if "hand-off" in line]
    finally:
        if daemon is not None:
            _stop(daemon)
        server.stop()
        for socket in work.glob("**/credential-socket"):
            subprocess.run(["git", "credential-cache", f"--socket={socket}", "exit"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: round(statistics.median(v), 4) for k, v in rows.items()}
    return {"load_start": load_start, "load_end": os.getloadavg()[0], "rounds": rounds, "median_s": medians,
            "handoff_x": round(medians["handoff"] / medians["blobless"], 2),
            "oneshot_x": round(medians["oneshot"] / medians["blobless"], 2), "steps": logs}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=1))

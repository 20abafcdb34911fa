"""The steps of a root-first mount (10k files, or FILES), for issue 15's mount-time rows (not a ``python -m
bench`` section: it writes nothing). Interleaved in one run on one server, ``N`` rounds:
the blobless clone (the floor), the root read alone (``rootfirst.read_root``: ``ls-refs``
and the ``filter tree:1`` fetch; this repo's root has directories only, so no
``object-info``), ``add-repo`` handed to a running daemon (the daemon's own account of it:
``hand-off NAME: planned, root read, forked, mounted``), the one-shot ``artifactd mount``
(its mount process's log line), the guide's flow (``add-repo`` with no daemon, then
``daemon &``, timed from add-repo's start to the first ``ls`` of the mount answering), and
the fixed costs: the interpreter start with and without ``site``, and with ``import
pyfuse3`` (the FUSE side every mounting process but the daemon's fork pays).

Two interpreters run the commands. ``sys.executable -m artifactd.fs`` is this environment's
(an editable install; here ``site`` also runs a sandbox's own ``.pth``, which imports
certifi: 20 ms quiet, several times that loaded). ``*_venv`` rows run the same commands the
way a regular install does: a venv made here without system site-packages, whose one
``.pth`` holds two plain path lines (the source, and this environment's site-packages for
the dependencies: a path line runs none of the ``.pth`` files in that folder), and pip's
console-script shims (``import re``, then the entry point) as ``bin/artifact-fs`` and
``bin/artifactd``.

    python -m bench.mount_steps [ROUNDS [FILES]]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import UNLIMITED, start_server, work_dir
from bench.mount import _git, _repo, _stop, _wait_mounted, make_source, timed


def main(rounds: int, files: int = 10_000) -> dict[str, object]:
    from artifactd.fs import rootfirst
    from artifactd.fs.inputs import parse_remote
    from artifactd.fs.wire import Remote

    load_start = os.getloadavg()[0]
    work = work_dir("mount-steps-")
    os.environ["ARTIFACT_FS_CACHE_DIR"] = str(work / "cache")
    server = start_server(work / "data", extra_env=UNLIMITED)
    fs = [sys.executable, "-m", "artifactd.fs"]
    daemon = None
    rows: dict[str, list[float]] = {k: [] for k in (
        "blobless", "root_read", "handoff", "handoff_venv", "oneshot", "oneshot_venv", "guide", "guide_add_repo", "guide_venv",
        "guide_venv_add_repo", "python",
        "python_S", "python_venv", "python_venv_S", "python_import_pyfuse3", "python_venv_import_pyfuse3",
        "python_S_import_pyfuse3")}
    logs: list[str] = []
    try:
        source = work / "source.git"
        make_source(source, files)
        root = work / "root"
        root.mkdir()
        first = _repo(server, "first")
        _git(f"--git-dir={source}", "push", "-q", first, "main")
        subprocess.run([*fs, "add-repo", "--name", "first", "--remote", first, "--mount-root", str(root)],
                       check=True, capture_output=True)
        with open(work / "daemon.err", "wb") as err:
            daemon = subprocess.Popen([*fs, "daemon", "--root", str(root)], stderr=err)
        _wait_mounted(daemon, root / "first")
        site_packages = next(p for p in sys.path if p.endswith("site-packages"))
        venv = regular_install(work / "venv", site_packages)
        fs_venv = [str(venv / "bin" / "artifact-fs")]
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
            auth = _repo(server, f"v{i}")
            _git(f"--git-dir={source}", "push", "-q", auth, "main")
            started = time.perf_counter()
            subprocess.run([*fs_venv, "add-repo", "--name", f"v{i}", "--remote", auth, "--mount-root", str(root)],
                           check=True, capture_output=True, env=clean_env())
            os.listdir(root / f"v{i}")
            rows["handoff_venv"].append(time.perf_counter() - started)
            subprocess.run(["fusermount3", "-u", str(root / f"v{i}")], capture_output=True)
            for key, client in (("guide", fs), ("guide_venv", fs_venv)):
                took, added = guide_flow(server, source, work / f"{key}{i}", client, logs)
                rows[key].append(took)
                rows[f"{key}_add_repo"].append(added)
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
            target = work / f"oneshot_venv{i}" / "mount"
            target.parent.mkdir()
            other = _repo(server, f"ov{i}")
            _git(f"--git-dir={source}", "push", "-q", other, "main")
            started = time.perf_counter()
            subprocess.run([str(venv / "bin" / "artifactd"), "mount", other, str(target)], check=True,
                           capture_output=True, env=clean_env())
            os.listdir(target)
            rows["oneshot_venv"].append(time.perf_counter() - started)
            subprocess.run([sys.executable, "-m", "artifactd", "unmount", str(target)], capture_output=True)
            rows["python"].append(timed([sys.executable, "-c", "pass"]))
            rows["python_S"].append(timed([sys.executable, "-S", "-c", "pass"]))
            rows["python_venv"].append(timed([str(venv / "bin" / "python"), "-c", "pass"], env=clean_env()))
            rows["python_venv_S"].append(timed([str(venv / "bin" / "python"), "-S", "-c", "pass"], env=clean_env()))
            rows["python_import_pyfuse3"].append(timed([sys.executable, "-c", "import pyfuse3"]))
            rows["python_venv_import_pyfuse3"].append(timed([str(venv / "bin" / "python"), "-c", "import pyfuse3"],
                                                            env=clean_env()))
            rows["python_S_import_pyfuse3"].append(timed(
                [sys.executable, "-S", "-c", f"import sys; sys.path.append({site_packages!r}); import pyfuse3"]))
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
    ratios = {f"{k}_x": round(medians[k] / medians["blobless"], 2)
              for k in ("handoff", "handoff_venv", "oneshot", "oneshot_venv", "guide", "guide_venv")}
    return {"load_start": load_start, "load_end": os.getloadavg()[0], "rounds": rounds, "files": files,
            "median_s": medians,
            **ratios, "steps": logs}


def clean_env() -> dict[str, str]:
    """The environment without this checkout's PYTHONPATH: the venv's own path only."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def regular_install(venv: Path, site_packages: str) -> Path:
    """A venv that starts as a regular install of this project does (see the module)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    import artifactd

    source = Path(artifactd.__file__).resolve().parent.parent  # the code under test (PYTHONPATH)
    pure = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True, env=clean_env()).stdout.strip()
    (Path(pure) / "artifactd_source.pth").write_text(f"{source}\n{site_packages}\n")
    for name, entry in (("artifact-fs", "artifactd.fs.cli"), ("artifactd", "artifactd.cli")):
        shim = venv / "bin" / name
        shim.write_text(f"#!{venv / 'bin' / 'python'}\n" + PIP_SHIM.replace("artifactd.fs.cli", entry))
        shim.chmod(0o755)
    return venv


PIP_SHIM = """# -*- coding: utf-8 -*-
import re
import sys
from artifactd.fs.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def guide_flow(server: object, source: Path, work: Path, client: list[str],
               logs: list[str]) -> tuple[float, float]:
    """Seconds from the guide's ``add-repo`` (no daemon running) to the first ``ls`` of the
    mount answering after ``daemon &`` (both run by ``client``), and of ``add-repo`` alone:
    a new root and repo each time."""
    root = work / "root"
    root.mkdir(parents=True)
    auth = _repo(server, work.name)
    _git(f"--git-dir={source}", "push", "-q", auth, "main")
    env = clean_env() if client[0] != sys.executable else None
    started = time.perf_counter()
    subprocess.run([*client, "add-repo", "--name", "starter-repo", "--remote", auth, "--branch", "main",
                    "--mount-root", str(root)], check=True, capture_output=True, env=env)
    added = time.perf_counter() - started
    with open(work / "daemon.err", "wb") as err:
        daemon = subprocess.Popen([*client, "daemon", "--root", str(root)], stderr=err, env=env)
    try:
        while not os.path.ismount(root / "starter-repo"):  # the guide's ls right after `daemon &`
            if daemon.poll() is not None:
                raise RuntimeError("artifact-fs daemon exited before mounting")
            time.sleep(0.001)
        os.listdir(root / "starter-repo")
        took = time.perf_counter() - started
    finally:
        _stop(daemon)
    log = (root / ".artifact-fs" / "run" / "starter-repo.log").read_text()
    logs += [f"{work.name}: {line.split('root-first: ')[1]}" for line in log.splitlines()
             if "root-first: mounted" in line]
    return took, added


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5,
                          int(sys.argv[2]) if len(sys.argv) > 2 else 10_000), indent=1))

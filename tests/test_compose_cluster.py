"""``deploy/compose.cluster.yaml`` (and its ``s3`` override) run as far as a machine without Docker allows.

There is no Docker daemon or image registry here, so ``docker compose up`` cannot run. What
a container would run is taken from the files instead (``tests/compose.py``): each artifactd
service's environment (the image's ``ENV`` lines under the compose ``environment``), its
command (the image's ``ENTRYPOINT`` and ``CMD`` unless the service overrides them), its
volumes and the ports nginx reaches it on. The services are then started as processes
with exactly that environment and argv; only what a container gets from Docker is mapped
to the host, each the same way for every value:

- service host names (``postgres:5432``) to the suite's PostgreSQL on loopback, whose role
  and database are the ones the compose ``postgres`` service is told to create;
- each node's container port (``ARTIFACTD_PORT``, which nginx's upstream must name) to a
  free port, and ``ARTIFACTD_HOST=0.0.0.0`` to loopback;
- the image's ``PATH`` (its venv) to the host's, which has git and this Python;
- named volumes to directories (a volume two services mount is one directory for both);
- the nginx service's bind mounts (its config file, the certificate directory) and
  published ports, for nginx from the machine.

Then git clones and pushes through the nginx port, with the ``remote`` the nodes answer
(their ``ARTIFACTD_PUBLIC_URL``) rewritten to it. A typo in a setting's name or value, the
command, a volume, a port or a host name fails here. ``docker compose config`` also
validates the files where the ``docker compose`` plugin is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from artifactd.config import SETTINGS
from tests import compose
from tests.gitutil import Git, bearer
from tests.harness import Postgres, die_with_parent, free_port
from tests.seaweed import SeaweedFS
from tests.test_deploy import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "compose.cluster.yaml"
S3 = DEPLOY / "compose.cluster.s3.yaml"
KNOWN_ENV = {setting.env for setting in SETTINGS} | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                     "PATH", "PYTHONUNBUFFERED"}
PASSWORD = "compose-test-password"

needs_nginx = pytest.mark.skipif(not shutil.which("nginx") or not shutil.which("openssl"),
                                 reason="nginx or openssl missing")


def _docker_compose() -> list[str] | None:
    """The Compose v2 plugin (v1's ``docker-compose`` predates the top-level ``name``)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.parametrize("files", [[BASE], [BASE, S3]], ids=["local", "s3"])
def test_docker_compose_config_validates_the_files(files: list[Path]) -> None:
    tool = _docker_compose()
    if tool is None:
        pytest.skip("no `docker compose` plugin on this machine")
    env = {**os.environ, "POSTGRES_PASSWORD": PASSWORD, "ARTIFACTD_S3_ENDPOINT_URL": "http://s3:8333",
           "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}
    argv = [*tool, *(arg for f in files for arg in ("-f", str(f))), "config", "--quiet"]
    checked = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


@dataclass
class Node:
    name: str
    argv: list[str]
    env: dict[str, str]
    container_port: int
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def plan_nodes(project: dict[str, Any], image: compose.Image, volumes: Path,
               hosts: dict[str, str]) -> list[Node]:
    """Each service built from the Dockerfile, as the process its container would run."""
    nodes = []
    for name, service in project["services"].items():
        if "build" not in service:
            continue
        for needed in service.get("depends_on", {}):
            assert needed in project["services"], f"{name} depends on unknown service {needed}"
        env = {**image.env, **service["environment"]}
        env.pop("PATH", None)  # the image's names its venv; the host's finds the same git and python
        unknown = sorted(set(env) - KNOWN_ENV)
        assert not unknown, f"{name}: settings artifactd does not know: {unknown}"
        db_host = urlsplit(env["ARTIFACTD_DATABASE_URL"]).hostname
        assert db_host in project["services"], f"{name}: database host {db_host!r} is no service"
        for key, value in env.items():
            for address, local in hosts.items():
                value = value.replace(f"@{address}/", f"@{local}/").replace(f"//{address}/", f"//{local}/")
            env[key] = value
        for key, value in env.items():  # every service address was mapped: none is left
            for other in project["services"]:
                assert f"@{other}:" not in value and f"//{other}:" not in value, (name, key, value)
        mounts = {compose.volume_source(v): compose._volume_target(v) for v in service.get("volumes", [])}
        for source in mounts:
            assert source in project["volumes"], f"{name} mounts undeclared volume {source!r}"
        by_target = {target: source for source, target in mounts.items()}
        data_dir = env["ARTIFACTD_DATA_DIR"]
        assert data_dir in by_target, f"{name}: its data dir {data_dir} is on no volume (lost on restart)"
        argv = compose.service_command(service, image)
        while argv and argv[0] in ("tini", "--"):  # PID 1 in the image; the process tree is ours here
            argv = argv[1:]
        assert argv[:1] == ["artifactd"], f"{name} does not run artifactd: {argv}"
        assert env["ARTIFACTD_HOST"] == "0.0.0.0", f"{name} must listen beyond its container"
        container_port = int(env["ARTIFACTD_PORT"])
        port = free_port()
        env.update(ARTIFACTD_HOST="127.0.0.1", ARTIFACTD_PORT=str(port),
                   ARTIFACTD_DATA_DIR=str(volumes / by_target[data_dir]))
        nodes.append(Node(name, [sys.executable, "-m", "artifactd", *argv[1:]], env, container_port,
                          port, volumes / by_target[data_dir]))
    return nodes


def postgres_for(project: dict[str, Any], pg: Postgres) -> str:
    """The suite's PostgreSQL given the role and database the compose ``postgres`` service creates."""
    env = project["services"]["postgres"]["environment"]
    user, database = env["POSTGRES_USER"], env["POSTGRES_DB"]
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(env["POSTGRES_PASSWORD"])))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(database), sql.Identifier(user)))
    return f"127.0.0.1:{pg.port}"


def nginx_config(project: dict[str, Any], nodes: list[Node], base: Path) -> tuple[Path, int]:
    """The compose nginx service's config, mounted files and published port, on this machine."""
    service = project["services"]["nginx"]
    for needed in service.get("depends_on", []):
        assert needed in project["services"], needed
    mounts = {compose._volume_target(v): (DEPLOY / compose.volume_source(v)).resolve()
              for v in service["volumes"]}
    site_file = mounts["/etc/nginx/conf.d/default.conf"]
    assert site_file.is_file(), f"nginx mounts {site_file}, which does not exist"
    certs = base / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=git.example.com", "-keyout", str(certs / "privkey.pem"),
                    "-out", str(certs / "fullchain.pem")], check=True, capture_output=True)
    site = site_file.read_text()
    for target, source in mounts.items():
        if source.name == "certs":
            site = site.replace(target, str(certs))
    for node in nodes:
        address = f"server {node.name}:{node.container_port} "
        assert address in site, f"nginx has no upstream {address.strip()} for service {node.name}"
        site = site.replace(address, f"server 127.0.0.1:{node.port} ")
    published = compose.published_ports(service)
    assert 443 in published and f"listen {443} ssl;" in site
    port = free_port()
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;").replace("listen [::]:443 ssl;\n", "")
    for container in published:
        if container != 443:
            site = site.replace(f"listen {container};", f"listen 127.0.0.1:{free_port()};")
            site = site.replace(f"listen [::]:{container};\n", "")
    (base / "site.conf").write_text(site)
    temp = base / "nginx-tmp"
    temp.mkdir()
    os.chmod(temp, 0o777)
    main = base / "nginx.conf"
    main.write_text(
        f"daemon off;\npid {base}/nginx.pid;\nerror_log {base}/error.log warn;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp};\n  proxy_temp_path {temp};\n"
        f"  include {base}/site.conf;\n}}\n")
    return main, port


def _start(node: Node, logs: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ARTIFACTD_", "AWS_"))}
    log = open(logs / f"{node.name}.log", "ab")  # noqa: SIM115 - the process owns it
    node.process = subprocess.Popen(node.argv, env={**base, **node.env}, stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    log.close()


def _wait_healthy(node: Node, logs: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert node.process is not None
        if node.process.poll() is not None:
            raise AssertionError(f"{node.name} exited:\n{(logs / f'{node.name}.log').read_text()}")
        try:
            if httpx.get(f"{node.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{node.name} did not answer /healthz:\n{(logs / f'{node.name}.log').read_text()}")


def _stop(processes: list[subprocess.Popen[bytes] | None]) -> None:
    for process in processes:
        if process is not None and process.poll() is None:
            process.terminate()
    for process in processes:
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def interpolation_env(seaweedfs: SeaweedFS) -> Iterator[dict[str, str]]:
    """The shell environment ``docker compose`` would be run in (the files' ``${...}``)."""
    yield {"POSTGRES_PASSWORD": PASSWORD, "ARTIFACTD_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
           "ARTIFACTD_S3_BUCKET": seaweedfs.new_bucket("compose"), **seaweedfs.env()}


@needs_nginx
@pytest.mark.parametrize("files", [[BASE], [BASE, S3]], ids=["local", "s3"])
def test_the_compose_cluster_runs_natively_and_serves_git_through_nginx(
        files: list[Path], postgres: Postgres, interpolation_env: dict[str, str],
        tmp_path: Path) -> None:
    project = compose.load(files, interpolation_env)
    image = compose.read_dockerfile(ROOT / "Dockerfile")
    database = postgres_for(project, postgres)
    volumes = tmp_path / "volumes"
    for volume in project["volumes"]:
        (volumes / volume).mkdir(parents=True)
    nodes = plan_nodes(project, image, volumes, {"postgres:5432": database})
    assert [n.name for n in nodes] == ["artifactd-1", "artifactd-2"]
    public_url = nodes[0].env["ARTIFACTD_PUBLIC_URL"]
    assert all(n.env == {**nodes[0].env, "ARTIFACTD_PORT": n.env["ARTIFACTD_PORT"],
                         "ARTIFACTD_DATA_DIR": n.env["ARTIFACTD_DATA_DIR"]} for n in nodes), \
        "every node runs with the same settings"
    config, port = nginx_config(project, nodes, tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for node in nodes:  # one at a time: the first migrates the empty database
            _start(node, logs)
            _wait_healthy(node, logs)
        # `docker compose exec artifactd-1 artifactd api-token create`: the node's environment.
        made = subprocess.run([sys.executable, "-m", "artifactd", "api-token", "create", "--json"],
                              env={**{k: v for k, v in os.environ.items()
                                      if not k.startswith(("ARTIFACTD_", "AWS_"))}, **nodes[0].env},
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        token = json.loads(made.stdout)
        nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(port, nginx)
        balancer = f"https://127.0.0.1:{port}"
        served_before = [_requests(node) for node in nodes]
        base = f"{balancer}/client/v4/accounts/{token['account_id']}/artifacts/namespaces/default"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token['token']}"},
                          verify=False, timeout=60) as lb:
            made_repo = lb.post("/repos", json={"name": "composed"})
            assert made_repo.status_code == 200, made_repo.text
            repo = made_repo.json()["result"]
            assert repo["remote"].startswith(public_url + "/"), (repo["remote"], public_url)
            git = Git(tmp_path / "home")
            git.env["GIT_SSL_NO_VERIFY"] = "1"
            # The public URL is the deployment's DNS name: here it is the nginx port.
            public = urlsplit(public_url)
            rewrite = f"url.{balancer}/.insteadOf={urlunsplit((public.scheme, public.netloc, '', '', ''))}/"
            work = tmp_path / "work"
            git.new_work(work, {"README.md": "# composed\n", "big.bin": os.urandom(256 * 1024)})
            git.run("-c", rewrite, "-c", bearer(repo["token"]), "push", "-q", repo["remote"],
                    "HEAD:refs/heads/main", cwd=work)
            sha = git.out("rev-parse", "HEAD", cwd=work)
            for n in range(3):  # least_conn spreads them; each must see the push
                copy = tmp_path / f"clone-{n}"
                git.run("-c", rewrite, "-c", bearer(repo["token"]), "clone", "-q", repo["remote"],
                        str(copy))
                assert git.out("rev-parse", "HEAD", cwd=copy) == sha
                assert (copy / "big.bin").read_bytes() == (work / "big.bin").read_bytes()
                assert git.run("fsck", "--no-progress", cwd=copy, check=False).returncode == 0
            reads = [lb.get("/repos/composed/raw/main/README.md") for _ in range(4)]
            assert {(r.status_code, r.text) for r in reads} == {(200, "# composed\n")}
        served_after = [_requests(node) for node in nodes]
        assert all(after > before + 2 for before, after in zip(served_before, served_after, strict=True)), \
            (served_before, served_after)
        caches = [n.data_dir / "repos" / repo["id"][:2] / repo["id"][2:4] / f"{repo['id']}.git"
                  for n in nodes]
        if S3 in files:  # a cache volume per node, each filled from the bucket
            assert nodes[0].data_dir != nodes[1].data_dir and all(c.is_dir() for c in caches)
            listed = seaweed_keys(interpolation_env)
            assert any(key.startswith("packs/") and key.endswith(".pack") for key in listed), listed
        else:  # one shared data volume, repos one shard level deep
            shared = nodes[0].data_dir / "repos" / repo["id"][:2] / f"{repo['id']}.git"
            assert nodes[0].data_dir == nodes[1].data_dir and shared.is_dir()
    finally:
        _stop([nginx, *(n.process for n in nodes)])


def seaweed_keys(env: dict[str, str]) -> set[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=env["ARTIFACTD_S3_ENDPOINT_URL"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          region_name=env["AWS_DEFAULT_REGION"])
    found = client.list_objects_v2(Bucket=env["ARTIFACTD_S3_BUCKET"]).get("Contents", [])
    return {str(item["Key"]) for item in found}


def _requests(node: Node) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("artifactd_http_requests_total"))


# -- the checks themselves fail on a typo (no servers) ------------------------------------------

def _typo(tmp_path: Path, old: str, new: str) -> Path:
    text = BASE.read_text()
    assert old in text, old
    broken = tmp_path / "compose.cluster.yaml"
    broken.write_text(text.replace(old, new, 1))
    return broken


@pytest.mark.parametrize(("old", "new", "message"), [
    ("ARTIFACTD_WORKERS:", "ARTIFACTD_WORKES:", "settings artifactd does not know"),
    ("@postgres:5432/", "@postgress:5432/", "is no service"),
    ("- artifactd-data:/var/lib/artifactd", "- artifactd-data:/var/lib/artifact",
     "is on no volume"),
])
def test_a_typo_in_the_compose_file_is_caught(tmp_path: Path, old: str, new: str,
                                              message: str) -> None:
    image = compose.read_dockerfile(ROOT / "Dockerfile")
    (tmp_path / "volumes").mkdir()
    right = compose.load([BASE], {"POSTGRES_PASSWORD": PASSWORD})
    assert len(plan_nodes(right, image, tmp_path / "volumes", {"postgres:5432": "127.0.0.1:1"})) == 2
    wrong = compose.load([_typo(tmp_path, old, new)], {"POSTGRES_PASSWORD": PASSWORD})
    with pytest.raises(AssertionError, match=message):
        plan_nodes(wrong, image, tmp_path / "volumes", {"postgres:5432": "127.0.0.1:1"})


def test_a_required_variable_left_unset_is_refused() -> None:
    with pytest.raises(compose.ComposeError, match="POSTGRES_PASSWORD"):
        compose.load([BASE], {})
    with pytest.raises(compose.ComposeError, match="ARTIFACTD_S3_ENDPOINT_URL"):
        compose.load([BASE, S3], {"POSTGRES_PASSWORD": PASSWORD})

"""The multi-node layout of docs/deployment.md, run: two nodes behind nginx on PostgreSQL.

nginx runs ``deploy/nginx-cluster.conf`` as written (only the node addresses, the listen
ports and the certificate paths are replaced) in front of two ``artifactd serve``
processes on one PostgreSQL database. With the ``local`` repo store the two nodes share
one data dir (the layout of ``deploy/compose.cluster.yaml``); the test checks that
requests reach both nodes, that the control plane, git and content reads work through
the balancer, that a token revoked through one node is refused by the other, and that
the balancer keeps serving when a node stops.

``test_git_across_nodes_with_their_own_caches`` runs the same nginx config in front of two
nodes with *separate* data dirs (their caches) on ``storage_backend = "s3"``: PostgreSQL for
the metadata, refs and pack lists, a SeaweedFS bucket for the packs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.gitutil import Git, bearer
from tests.harness import Postgres, Server, free_port, start_server
from tests.multinode import start_cluster
from tests.seaweed import SeaweedFS
from tests.test_deploy import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NODE_ADDRESSES = ("artifactd-1:8787", "artifactd-2:8787")

needs_nginx = pytest.mark.skipif(not shutil.which("nginx") or not shutil.which("openssl"),
                                 reason="nginx or openssl missing")


def cluster_site(tmp_path: Path, port: int, node_ports: tuple[int, int]) -> Path:
    """deploy/nginx-cluster.conf on free ports with a throwaway certificate, as a whole config."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=git.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    site = (DEPLOY / "nginx-cluster.conf").read_text()
    for address, node_port in zip(NODE_ADDRESSES, node_ports, strict=True):
        assert f"server {address} " in site
        site = site.replace(f"server {address} ", f"server 127.0.0.1:{node_port} ")
    site = site.replace("/etc/nginx/certs/fullchain.pem", str(cert))
    site = site.replace("/etc/nginx/certs/privkey.pem", str(key))
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;").replace("listen [::]:443 ssl;\n", "")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{free_port()};").replace("listen [::]:80;\n", "")
    (tmp_path / "site.conf").write_text(site)
    temp = tmp_path / "nginx-tmp"
    temp.mkdir()
    os.chmod(temp, 0o777)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log warn;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp};\n  proxy_temp_path {temp};\n"
        f"  include {tmp_path}/site.conf;\n}}\n"
    )
    return main


def test_cluster_compose_runs_the_tested_layout() -> None:
    """The compose file is not run here (no Docker): it must describe what the test below runs."""
    compose = yaml.safe_load((DEPLOY / "compose.cluster.yaml").read_text())
    services = compose["services"]
    nodes = [name for name in services if name.startswith("artifactd-")]
    assert sorted(f"{name}:8787" for name in nodes) == sorted(NODE_ADDRESSES)
    envs = [services[name]["environment"] for name in nodes]
    assert all(env["ARTIFACTD_DATABASE_URL"].startswith("postgresql://") for env in envs)
    assert envs[0] == envs[1], "every node runs with the same settings"
    assert all(services[name]["volumes"] == ["artifactd-data:/var/lib/artifactd"] for name in nodes)
    assert "./nginx-cluster.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]
    assert services["postgres"]["healthcheck"]
    nginx = (DEPLOY / "nginx-cluster.conf").read_text()
    for directive in ("proxy_request_buffering off;", "proxy_buffering off;", "client_max_body_size 0;",
                      "proxy_next_upstream error timeout;", "proxy_read_timeout 3600s;"):
        assert directive in nginx, directive
    assert "non_idempotent" not in nginx, "a push must never be sent to a second node"


@pytest.fixture
def two_nodes(postgres: Postgres, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    url = postgres.new_database()
    first = start_server(tmp_path / "data", database_url=url)
    second = Server(data_dir=first.data_dir, port=free_port(), env=first.env,
                    account_id=first.account_id, token=first.token, read_token=first.read_token)
    try:
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()


@pytest.fixture
def balancer(two_nodes: tuple[Server, Server], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = cluster_site(tmp_path, port, (two_nodes[0].port, two_nodes[1].port))
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, nginx)
        yield f"https://127.0.0.1:{port}"
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def requests_served(node: Server) -> float:
    return node.metric("artifactd_http_requests_total")


@needs_nginx
def test_two_nodes_behind_the_nginx_example(two_nodes: tuple[Server, Server], balancer: str,
                                            tmp_path: Path) -> None:
    first, second = two_nodes
    served_before = [requests_served(node) for node in two_nodes]
    base = f"{balancer}/client/v4/accounts/{first.account_id}/artifacts/namespaces/default"
    headers = {"Authorization": f"Bearer {first.token}"}
    with httpx.Client(base_url=base, headers=headers, verify=False, timeout=60) as lb:
        created = [lb.post("/repos", json={"name": f"lb-{n}"}) for n in range(8)]
        assert [r.status_code for r in created] == [200] * 8, created[-1].text
        listed = lb.get("/repos", params={"limit": 50}).json()["result"]
        assert {f"lb-{n}" for n in range(8)} <= {repo["name"] for repo in listed}
        repo = created[0].json()["result"]
        assert repo["remote"].startswith(first.url)  # ARTIFACTD_PUBLIC_URL is not set here

        # git through the balancer: a push, then clones and content reads that land on both.
        git = Git(tmp_path / "home")
        git.env["GIT_SSL_NO_VERIFY"] = "1"
        remote = repo["remote"].replace(first.url, balancer)
        work = tmp_path / "work"
        git.new_work(work, {"README.md": "# through nginx\n", "big.bin": os.urandom(256 * 1024)})
        git.run("-c", bearer(repo["token"]), "push", "-q", remote, "HEAD:refs/heads/main", cwd=work)
        for n in range(4):
            copy = tmp_path / f"clone-{n}"
            git.run("-c", bearer(repo["token"]), "clone", "-q", remote, str(copy))
            assert (copy / "big.bin").read_bytes() == (work / "big.bin").read_bytes()
        reads = [lb.get(f"/repos/{repo['name']}/raw/main/README.md") for _ in range(6)]
        assert {(r.status_code, r.text) for r in reads} == {(200, "# through nginx\n")}

        # A repo token revoked through the balancer is refused by each node at once.
        minted = lb.post("/tokens", json={"repo": repo["name"], "scope": "read", "ttl": 600})
        token = minted.json()["result"]["plaintext"]
        assert lb.post(f"/repos/{repo['name']}/tokens/revoke", json={"token": token}).status_code == 200
        for node in two_nodes:
            direct = git.run("-c", bearer(token), "ls-remote", repo["remote"].replace(first.url, node.url),
                             check=False)
            assert direct.returncode != 0
    served_after = [requests_served(node) for node in two_nodes]
    assert all(after > before + 3 for before, after in zip(served_before, served_after, strict=True)), \
        (served_before, served_after)

    # One node stops: the balancer sends everything to the other.
    second.stop()
    with httpx.Client(base_url=base, headers=headers, verify=False, timeout=60) as lb:
        answers = [lb.get(f"/repos/{repo['name']}").status_code for _ in range(6)]
        assert answers == [200] * 6
        assert lb.post("/repos", json={"name": "lb-after"}).status_code == 200


@needs_nginx
def test_git_across_nodes_with_their_own_caches(postgres: Postgres, seaweedfs: SeaweedFS,
                                                tmp_path: Path) -> None:
    """Two nodes on ``storage_backend = "s3"``, each with a data dir (cache) of its own, behind
    deploy/nginx-cluster.conf: a push through either is served by the other at once."""
    cluster = start_cluster(tmp_path / "nodes", postgres, seaweedfs, count=2)
    first, second = cluster.nodes
    port = free_port()
    config = cluster_site(tmp_path, port, (first.port, second.port))
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, nginx)
        balancer = f"https://127.0.0.1:{port}"
        served_before = [requests_served(node) for node in cluster.nodes]
        base = f"{balancer}/client/v4/accounts/{first.account_id}/artifacts/namespaces/default"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {first.token}"},
                          verify=False, timeout=60) as lb:
            repo = lb.post("/repos", json={"name": "across"}).json()["result"]
            git = Git(tmp_path / "home")
            git.env["GIT_SSL_NO_VERIFY"] = "1"
            through = repo["remote"].replace(first.url, balancer)
            work = tmp_path / "work"
            git.new_work(work, {"README.md": "# across\n", "big.bin": os.urandom(256 * 1024)})
            git.run("-c", bearer(repo["token"]), "push", "-q", through, "HEAD:refs/heads/main",
                    cwd=work)
            # Pushes straight to each node in turn, each read through the other at once.
            for writer, reader in ((first, second), (second, first)):
                sha = git.commit_files(work, {f"{writer.port}.txt": "x\n"}, f"via {writer.port}")
                git.run("-c", bearer(repo["token"]), "push", "-q",
                        repo["remote"].replace(first.url, writer.url), "HEAD:refs/heads/main",
                        cwd=work)
                listed = git.out("-c", bearer(repo["token"]), "ls-remote",
                                 repo["remote"].replace(first.url, reader.url), "refs/heads/main")
                assert re.match(sha, listed), (sha, listed)
            for n in range(4):
                copy = tmp_path / f"clone-{n}"
                git.run("-c", bearer(repo["token"]), "clone", "-q", through, str(copy))
                assert (copy / "big.bin").read_bytes() == (work / "big.bin").read_bytes()
                assert git.out("rev-parse", "HEAD", cwd=copy) == sha
            reads = [lb.get("/repos/across/raw/main/README.md") for _ in range(4)]
            assert {(r.status_code, r.text) for r in reads} == {(200, "# across\n")}
            fork = lb.post("/repos/across/fork", json={"name": "across-fork"})
            assert fork.status_code == 200, fork.text
            fork_remote = fork.json()["result"]["remote"].replace(first.url, balancer)
            fork_copy = tmp_path / "fork-clone"
            git.run("-c", bearer(fork.json()["result"]["token"]), "clone", "-q", fork_remote,
                    str(fork_copy))
            assert git.out("rev-parse", "HEAD", cwd=fork_copy) == sha
        served_after = [requests_served(node) for node in cluster.nodes]
        assert all(after > before + 3 for before, after in
                   zip(served_before, served_after, strict=True)), (served_before, served_after)
        # Separate caches: each node holds its own copy of the repo, and the data dirs differ.
        caches = [node.data_dir / "repos" / repo["id"][:2] / repo["id"][2:4] / f"{repo['id']}.git"
                  for node in cluster.nodes]
        assert caches[0] != caches[1] and all(cache.is_dir() for cache in caches)
        assert cluster.listed_keys(repo["id"]) <= cluster.bucket_keys()
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
        cluster.stop()

"""The object-store layer against a real S3-compatible server (SeaweedFS on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifactd.storage.objectstore import (
    ObjectExists,
    ObjectMissing,
    ObjectStore,
    ObjectStoreConfig,
    ObjectStoreUnavailable,
)
from tests.harness import free_port
from tests.seaweed import SeaweedFS


def _store(seaweedfs: SeaweedFS, bucket: str, **overrides: str) -> ObjectStore:
    options = {
        "endpoint_url": seaweedfs.endpoint_url, "bucket": bucket, "region": seaweedfs.region,
        "prefix": "node-tests", "access_key_id": seaweedfs.access_key,
        "secret_access_key": seaweedfs.secret_key,
    }
    options.update(overrides)
    return ObjectStore(ObjectStoreConfig(**options))  # type: ignore[arg-type]


def test_round_trip_under_a_prefix(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    store = _store(seaweedfs, seaweedfs.new_bucket())
    store.check()
    store.put_bytes("packs/a.pack", b"PACK")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(5 << 20))
    store.put_file("packs/b.pack", big)
    assert store.get_bytes("packs/a.pack") == b"PACK"
    out = tmp_path / "out"
    assert store.get_file("packs/b.pack", out) == 5 << 20
    assert out.read_bytes() == big.read_bytes()
    assert sorted(store.list("packs/")) == [("packs/a.pack", 4), ("packs/b.pack", 5 << 20)]
    assert store.size("packs/b.pack") == 5 << 20
    # The prefix is real: the raw bucket holds the keys below it.
    raw = seaweedfs.client().list_objects_v2(Bucket=store.bucket)["Contents"]
    assert {item["Key"] for item in raw} == {"node-tests/packs/a.pack", "node-tests/packs/b.pack"}
    store.delete("packs/a.pack")
    with pytest.raises(ObjectMissing):
        store.get_bytes("packs/a.pack")
    with pytest.raises(ObjectMissing):
        store.get_file("packs/a.pack", tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_create_if_absent_never_overwrites(seaweedfs: SeaweedFS) -> None:
    store = _store(seaweedfs, seaweedfs.new_bucket())
    store.put_bytes("refs/lease", b"node-a", if_absent=True)
    with pytest.raises(ObjectExists):
        store.put_bytes("refs/lease", b"node-b", if_absent=True)
    assert store.get_bytes("refs/lease") == b"node-a"


def test_wrong_credentials_missing_bucket_and_no_server_name_the_fix(seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket()
    with pytest.raises(ObjectStoreUnavailable, match="AWS_SECRET_ACCESS_KEY"):
        _store(seaweedfs, bucket, secret_access_key="not-the-secret").check()
    with pytest.raises(ObjectStoreUnavailable, match="does not exist"):
        _store(seaweedfs, "no-such-bucket-here").check()
    with pytest.raises(ObjectStoreUnavailable, match="cannot reach"):
        _store(seaweedfs, bucket, endpoint_url=f"http://127.0.0.1:{free_port()}").check()

"""An S3-compatible bucket, as the rest of artifactd sees it: immutable objects under a prefix.

A thin typed layer over boto3 (synchronous: callers on the event loop run these in a
thread). It maps the store's many failure shapes onto three exceptions the services can
act on: ``ObjectStoreUnavailable`` (network, credentials, throttling, a missing bucket:
answer 503 and retry later), ``ObjectMissing`` (the key is not there) and
``ObjectExists`` (a conditional create lost: ``If-None-Match: *``, which SeaweedFS and
AWS S3 both honour, so two nodes never overwrite each other's object).

Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, shared files) unless given explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
_EXISTS_CODES = frozenset({"412", "PreconditionFailed", "ConditionalRequestConflict"})


class ObjectStoreError(Exception):
    """Base of the errors below."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The store cannot be reached or refuses us (network, credentials, missing bucket)."""


class ObjectMissing(ObjectStoreError):
    """No object under that key."""


class ObjectExists(ObjectStoreError):
    """A create-if-absent found the key already taken."""


@dataclass(frozen=True)
class ObjectStoreConfig:
    endpoint_url: str
    bucket: str
    region: str = "us-east-1"
    prefix: str = ""
    access_key_id: str | None = None
    secret_access_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> str:
    return str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


class ObjectStore:
    """Objects of one bucket under one key prefix (``prefix`` is joined with ``/``)."""

    def __init__(self, config: ObjectStoreConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url or None,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                max_pool_connections=32,
                # Over plain http (a loopback or private-network store) botocore would
                # SHA-256 the whole body for the signature, a second pass over every pack
                # byte; the CRC32 checksum it sends anyway still catches corruption, and
                # over https botocore skips the body hash by itself.
                s3={"payload_signing_enabled": False},
            ),
        )

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _translate(self, error: Exception, key: str) -> ObjectStoreError:
        if isinstance(error, ClientError):
            code, status = _code(error), _status(error)
            if code in _MISSING_CODES or (status == "404" and code != "NoSuchBucket"):
                return ObjectMissing(key)
            if code in _EXISTS_CODES or status == "412":
                return ObjectExists(key)
            return ObjectStoreUnavailable(f"object store refused {key!r}: {code or status}")
        return ObjectStoreUnavailable(f"object store unreachable: {type(error).__name__}")

    def check(self) -> None:
        """Raise ``ObjectStoreUnavailable`` naming the fix unless the bucket is there and ours."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1)
        except ClientError as error:
            code, status = _code(error), _status(error)
            if status == "404" or code in {"NoSuchBucket", "404"}:
                raise ObjectStoreUnavailable(
                    f"bucket {self.bucket!r} does not exist at {self.config.endpoint_url}: "
                    "create it, or set s3_bucket to an existing bucket") from None
            if status in {"401", "403"} or code in {
                    "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"}:
                raise ObjectStoreUnavailable(
                    f"the object store refused our credentials for bucket {self.bucket!r} "
                    f"({code or status}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
            raise ObjectStoreUnavailable(
                f"object store error on bucket {self.bucket!r}: {code or status}") from None
        except BotoCoreError as error:
            raise ObjectStoreUnavailable(
                f"cannot reach the object store at {self.config.endpoint_url}: "
                f"{type(error).__name__}") from None

    def put_file(self, name: str, path: Path, *, if_absent: bool = False) -> None:
        with path.open("rb") as body:
            self.put_stream(name, body, if_absent=if_absent)

    def put_bytes(self, name: str, data: bytes, *, if_absent: bool = False) -> None:
        self._put(name, data, if_absent)

    def put_stream(self, name: str, body: BinaryIO, *, if_absent: bool = False) -> None:
        self._put(name, body, if_absent)

    def _put(self, name: str, body: bytes | BinaryIO, if_absent: bool) -> None:
        key = self.key(name)
        extra: dict[str, str] = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None

    # -- multipart uploads (a pack streamed to the bucket while it arrives) ------------------

    def start_multipart(self, name: str) -> str:
        """Begin a multipart upload of ``name``; returns its upload id."""
        key = self.key(name)
        try:
            return str(self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"])
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None

    def put_part(self, name: str, upload_id: str, number: int, data: bytes | memoryview) -> str:
        """Upload part ``number`` (from 1) of an upload; returns its ETag."""
        key = self.key(name)
        try:
            return str(self._client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                PartNumber=number, Body=bytes(data))["ETag"])
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None

    def complete_multipart(self, name: str, upload_id: str, etags: list[str]) -> None:
        """Make the upload's parts (ETags in part order) the object ``name``."""
        key = self.key(name)
        parts = [{"ETag": etag, "PartNumber": number} for number, etag in enumerate(etags, 1)]
        try:
            self._client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                   MultipartUpload={"Parts": parts})
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None

    def abort_multipart(self, name: str, upload_id: str) -> None:
        """Drop an upload and its parts (an upload already gone is no error)."""
        key = self.key(name)
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as error:
            translated = self._translate(error, key)
            if not isinstance(translated, ObjectMissing):
                raise translated from None

    def multipart_uploads(self, prefix: str = "") -> Iterator[tuple[str, str, float]]:
        """(name relative to this store's prefix, upload id, start as a Unix time) of every
        upload under ``prefix`` neither completed nor aborted."""
        base = self.key("")
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(prefix)):
                for item in page.get("Uploads", []):
                    yield (str(item["Key"])[len(base):], str(item["UploadId"]),
                           float(item["Initiated"].timestamp()))
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, self.key(prefix)) from None

    def get_bytes(self, name: str) -> bytes:
        key = self.key(name)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None

    def get_file(self, name: str, path: Path, chunk: int = 1 << 20) -> int:
        """Stream the object into ``path`` (written whole or not at all); returns its size."""
        key = self.key(name)
        partial = path.with_name(f".{path.name}.part")
        size = 0
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            with partial.open("wb") as out:
                for piece in response["Body"].iter_chunks(chunk):
                    out.write(piece)
                    size += len(piece)
            partial.replace(path)
            return size
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None
        finally:
            partial.unlink(missing_ok=True)

    def size(self, name: str) -> int:
        key = self.key(name)
        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None

    def delete(self, name: str) -> None:
        key = self.key(name)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, key) from None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(name relative to this store's prefix, size) of every object under ``prefix``."""
        base = self.key("")
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(prefix)):
                for item in page.get("Contents", []):
                    yield str(item["Key"])[len(base):], int(item["Size"])
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, self.key(prefix)) from None

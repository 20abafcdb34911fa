"""The domain exception tree. No HTTP here: ``artifactd.http.errors`` maps classes to statuses.

    ArtifactdError                     code, message, pointer
    ├── ConfigError                    bad settings (CLI exits 2)
    ├── ValidationError        400     a request field is wrong (pointer names it)
    ├── AuthenticationError    401     no / unknown / expired credential
    ├── PermissionDenied       403     credential valid but not allowed
    ├── NotFound               404     namespace, repo, token, ref, object, file
    ├── Conflict               409     name taken, already revoked, repo busy (retriable)
    ├── PayloadTooLarge        413
    ├── RateLimited            429     retry_after seconds
    ├── StorageLimitExceeded   413/507
    ├── ServiceUnavailable     503     retry_after seconds
    └── InternalError          500

Numeric codes are stable and listed in ``docs/errors.md``; ``Code`` is their one source.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    """Every numeric error code the server sends (``docs/errors.md`` lists them).

    The first block is Cloudflare's published Artifacts error table: where an artifactd error
    means what a published code means, it is sent with that code, so clients written against
    the hosted service work unchanged. The second block is artifactd's own, finer codes, kept
    at 11000 and above so that they collide with no published code (10100-10499). Old names
    that now share a published number stay as aliases.
    """

    # Published (Cloudflare Artifacts "Error codes").
    INVALID_INPUT = 10100
    INVALID_REPO_NAME = 10101
    INVALID_TTL = 10103
    INVALID_URL = 10104
    REMOTE_AUTH_REQUIRED = 10106
    NOT_FOUND = 10200
    ALREADY_EXISTS = 10201
    IMPORT_IN_PROGRESS = 10302
    FORK_IN_PROGRESS = 10303
    INTERNAL_ERROR = 10400
    UPSTREAM_UNAVAILABLE = 10401
    MEMORY_LIMIT = 10402
    # Aliases: artifactd errors that carry a published code.
    VALIDATION = INVALID_INPUT
    REPO_NOT_FOUND = NOT_FOUND
    FILE_NOT_FOUND = NOT_FOUND
    REPO_EXISTS = ALREADY_EXISTS
    INTERNAL = INTERNAL_ERROR

    # artifactd's own (no published code has their meaning).
    ROUTE_NOT_FOUND = 11001
    METHOD_NOT_ALLOWED = 11002
    MALFORMED_JSON = 11003
    BODY_TOO_LARGE = 11005
    UNSUPPORTED_MEDIA_TYPE = 11006
    AUTH_REQUIRED = 11010
    INVALID_API_TOKEN = 11011
    PERMISSION_DENIED = 11012
    ACCOUNT_NOT_AUTHORIZED = 11013
    NAMESPACE_NOT_FOUND = 11020
    REPO_READ_ONLY = 11033
    REPO_FAILED = 11034
    TOKEN_NOT_FOUND = 11040
    TOKEN_ALREADY_REVOKED = 11041
    INVALID_REPO_TOKEN = 11042
    INVALID_CURSOR = 11050
    RATE_LIMITED = 11060
    STORAGE_LIMIT = 11070
    SERVICE_UNAVAILABLE = 11080
    IMPORT_REFUSED = 11090
    IMPORT_BRANCH_NOT_FOUND = 11092
    # The connection guard (http/protocol.py): answers before any route runs.
    MALFORMED_HTTP = 11100
    REQUEST_TIMEOUT = 11101
    URI_TOO_LONG = 11102
    HEADERS_TOO_LARGE = 11103
    REF_NOT_FOUND = 11201
    OBJECT_NOT_FOUND = 11202
    INVALID_HASH = 11203
    PATH_IS_DIRECTORY = 11204
    INVALID_PATH = 11205
    RANGE_NOT_SATISFIABLE = 11206
    # Writes without a git client (services/writes/commits.py, merges.py, refs.py, notes.py).
    HEAD_MOVED = 12000
    INVALID_CHANGE = 12001
    INVALID_CONTENT = 12002
    TOO_MANY_CHANGES = 12003
    REF_EXISTS = 12004
    MERGE_CONFLICT = 12005
    UNRELATED_HISTORIES = 12006
    NOT_FAST_FORWARD = 12007
    NOTE_NOT_FOUND = 12008
    # Events and subscriptions (services/events/subscriptions.py, webhooks.py).
    SUBSCRIPTION_NOT_FOUND = 12300
    WEBHOOK_REFUSED = 12301
    INVALID_EVENT_CURSOR = 12302
    UNKNOWN_EVENT_TYPE = 12303
    # The s3 repo store (storage/s3store/): the bucket, and packs it should hold.
    OBJECT_STORE_UNAVAILABLE = 12400
    PACK_MISSING = 12401
    NOT_ON_S3_BACKEND = 12402  # retired (REST writes work on s3): kept so it is never reused
    # backup and restore (``artifactd backup`` / ``restore``; the CLI prints them).
    BACKUP_TARGET_NOT_EMPTY = 12500
    BACKUP_STORE_UNAVAILABLE = 12501
    BACKUP_NOT_FOUND = 12502
    BACKUP_CORRUPT = 12503
    BACKUP_SCHEMA_NEWER = 12504
    RESTORE_TARGET_NOT_EMPTY = 12505
    BACKUP_REPO_BUSY = 12506
    RESTORE_BACKEND_MISMATCH = 12507


class ArtifactdError(Exception):
    """Base of every error the services raise on purpose."""

    default_code: Code = Code.INTERNAL

    def __init__(self, message: str, *, code: Code | None = None, pointer: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.pointer = pointer


class ConfigError(ArtifactdError):
    default_code = Code.VALIDATION


class ValidationError(ArtifactdError):
    default_code = Code.VALIDATION


class AuthenticationError(ArtifactdError):
    default_code = Code.AUTH_REQUIRED


class PermissionDenied(ArtifactdError):
    default_code = Code.PERMISSION_DENIED


class NotFound(ArtifactdError):
    default_code = Code.REPO_NOT_FOUND


class Conflict(ArtifactdError):
    default_code = Code.REPO_EXISTS

    def __init__(
        self, message: str, *, code: Code | None = None, pointer: str | None = None,
        retriable: bool = False, details: dict[str, object] | None = None,
    ):
        super().__init__(message, code=code, pointer=pointer)
        self.retriable = retriable
        self.details = details  # extra members of the error (a merge's conflicts)


class PayloadTooLarge(ArtifactdError):
    default_code = Code.BODY_TOO_LARGE


class RateLimited(ArtifactdError):
    default_code = Code.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class StorageLimitExceeded(ArtifactdError):
    default_code = Code.STORAGE_LIMIT


class ServiceUnavailable(ArtifactdError):
    default_code = Code.SERVICE_UNAVAILABLE

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class RangeNotSatisfiable(ArtifactdError):
    default_code = Code.RANGE_NOT_SATISFIABLE


class InternalError(ArtifactdError):
    default_code = Code.INTERNAL

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
    INTERNAL = 10000
    ROUTE_NOT_FOUND = 10001
    METHOD_NOT_ALLOWED = 10002
    MALFORMED_JSON = 10003
    VALIDATION = 10004
    BODY_TOO_LARGE = 10005
    UNSUPPORTED_MEDIA_TYPE = 10006
    AUTH_REQUIRED = 10010
    INVALID_API_TOKEN = 10011
    PERMISSION_DENIED = 10012
    ACCOUNT_NOT_AUTHORIZED = 10013
    NAMESPACE_NOT_FOUND = 10020
    REPO_NOT_FOUND = 10030
    REPO_EXISTS = 10031
    REPO_NOT_READY = 10032
    REPO_READ_ONLY = 10033
    REPO_FAILED = 10034
    TOKEN_NOT_FOUND = 10040
    TOKEN_ALREADY_REVOKED = 10041
    INVALID_REPO_TOKEN = 10042
    INVALID_CURSOR = 10050
    RATE_LIMITED = 10060
    STORAGE_LIMIT = 10070
    SERVICE_UNAVAILABLE = 10080
    IMPORT_REFUSED = 10090
    IMPORT_SOURCE_INVALID = 10091
    IMPORT_BRANCH_NOT_FOUND = 10092
    MALFORMED_HTTP = 10100
    REQUEST_TIMEOUT = 10101
    URI_TOO_LONG = 10102
    HEADERS_TOO_LARGE = 10103
    FILE_NOT_FOUND = 10200
    REF_NOT_FOUND = 10201
    OBJECT_NOT_FOUND = 10202
    INVALID_HASH = 10203
    PATH_IS_DIRECTORY = 10204
    INVALID_PATH = 10205
    RANGE_NOT_SATISFIABLE = 10206
    # Lane A (writes without a git client): 12000-12099.
    HEAD_MOVED = 12000
    INVALID_CHANGE = 12001
    INVALID_CONTENT = 12002
    TOO_MANY_CHANGES = 12003
    REF_EXISTS = 12004
    MERGE_CONFLICT = 12005
    UNRELATED_HISTORIES = 12006
    NOT_FAST_FORWARD = 12007
    NOTE_NOT_FOUND = 12008


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

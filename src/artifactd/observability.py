"""Prometheus metrics, defined once for every layer.

With ``--workers N`` each process writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by
``artifactd serve`` before the workers start) and ``/metrics`` merges them, so the numbers
cover the whole server, not the one worker that answered the scrape.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "artifactd_http_requests_total", "HTTP requests by route class and status code.",
    ["route_class", "status"],
)
REQUEST_SECONDS = Histogram(
    "artifactd_http_request_duration_seconds", "HTTP request duration by route class.",
    ["route_class"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
GIT_BYTES_SENT = Counter("artifactd_git_bytes_sent_total", "Bytes sent to git clients.", ["service"])
GIT_BYTES_RECEIVED = Counter(
    "artifactd_git_bytes_received_total", "Bytes received from git clients.", ["service"]
)
GIT_BLOB_FETCHES = Counter(
    "artifactd_git_blob_fetches_total",
    "Partial-clone blob fetches answered without starting git (services/git/blob_fetch.py).",
)
GIT_IN_PROCESS = Counter(
    "artifactd_git_in_process_total",
    "Small clones' ls-refs and fetch requests (services/git/small_clone.py), and ArtifactFS's "
    "root reads (root_fetch.py), answered in process, without git.", ["command"],
)
GIT_PUSHES_IN_PROCESS = Counter(
    "artifactd_git_pushes_in_process_total",
    "Pushes on the local store received in process (received) or, after reading the whole "
    "request, given to git receive-pack (given_to_git) (services/git/push_in_process.py).",
    ["outcome"],
)
GIT_PROCESSES_STARTED = Counter(
    "artifactd_git_processes_started_total",
    "git processes started to serve a client's request (upload-pack, receive-pack), by service.",
    ["service"],
)
GIT_ADVERTISEMENTS_FROM_MEMORY = Counter(
    "artifactd_git_push_advertisements_from_memory_total",
    "receive-pack advertisements of repos with no refs served from memory, without git "
    "(services/git/git_rpc.py).",
)
CONTENT_REPO_OPENS = Counter(
    "artifactd_content_repo_opens_total",
    "Repositories opened in process for content reads (storage/objectreader.py): a miss of its "
    "LRU of open repositories, or a reopen after their packs changed.",
)
GIT_PROCESSES = Gauge(
    "artifactd_git_processes", "git processes currently serving clients.",
    multiprocess_mode="livesum",
)
RATE_LIMITED = Counter("artifactd_rate_limited_total", "Requests refused by a rate limit.", ["kind"])
EVENTS_DROPPED = Counter(
    "artifactd_events_dropped_total", "Analytics events dropped because the buffer was full."
)
MAINTENANCE_RUNS = Counter("artifactd_maintenance_runs_total", "Repo maintenance runs.", ["kind"])
MAINTENANCE_SECONDS = Histogram(
    "artifactd_maintenance_duration_seconds", "Time one repo maintenance took.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
STORAGE_REFUSED = Counter(
    "artifactd_storage_limit_refusals_total", "Operations refused by a storage limit."
)
SQLITE_CHECKPOINTS = Counter(
    "artifactd_sqlite_checkpoints_total",
    "WAL checkpoints run by the background checkpointer (SQLite only).",
)
GC_FROZEN_OBJECTS = Gauge(
    "artifactd_gc_frozen_objects",
    "Objects of the started server that the garbage collector never scans (http/heap.py).",
    multiprocess_mode="max",
)
HTTP_GUARD_REFUSALS = Counter(
    "artifactd_http_guard_refusals_total",
    "Connections answered or closed by the connection guard (http/protocol.py), by reason.",
    ["reason"],
)

# Events (docs/events.md): the outbox and webhook delivery.
EVENTS_WRITTEN = Counter("artifactd_events_written_total", "Events written to the outbox.", ["type"])
EVENT_DELIVERIES = Counter(
    "artifactd_event_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, failed; retried: a retry scheduled).",
    ["outcome"],
)
EVENT_DELIVERY_SECONDS = Histogram(
    "artifactd_event_delivery_latency_seconds",
    "Seconds from an event's write to its successful webhook delivery.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
)
EVENT_QUEUE_DEPTH = Gauge(
    "artifactd_event_queue_depth",
    "Outbox events past the slowest active subscription's cursor (sampled every 5 minutes).",
    multiprocess_mode="max",
)

# The s3 repo store (storage/s3store/).
S3_PACKS_MISSING = Counter(
    "artifactd_s3_packs_missing_total",
    "Reads that found a pack the repo lists missing from the bucket (deleted behind our back).")
S3_OBJECT_STORE_ERRORS = Counter(
    "artifactd_s3_object_store_errors_total",
    "Requests refused with 503 because the object store could not be reached.")
S3_BYTES_DOWNLOADED = Counter(
    "artifactd_s3_cache_bytes_downloaded_total", "Pack bytes downloaded into this node's cache.")
S3_PUSH_PACKS = Counter(
    "artifactd_s3_push_packs_total",
    "Pushed packs stored in the bucket, by how: streamed while they arrived, uploaded whole "
    "after receive-pack (smaller than one part), or streamed and then uploaded whole anyway "
    "(fallback: a thin pack index-pack completed, or the streamed upload failed).",
    ["upload"])
S3_PUSH_UPLOADS_ABORTED = Counter(
    "artifactd_s3_push_uploads_aborted_total",
    "Streamed uploads of pushed packs aborted (fallback, refused or interrupted pushes).")

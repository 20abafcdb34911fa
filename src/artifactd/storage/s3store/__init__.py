"""The ``s3`` repo store: packs in a bucket, refs and pack lists in SQL, a local disk cache.

- ``catalog``: the SQL side (generations, refs, pack lists, packs, maintenance leases);
- ``cache``: a node's cache of one repo, brought to the catalog's generation on demand;
- ``store``: ``S3RepoStore``, the ``RepoStore`` the rest of the server uses on this backend.
"""

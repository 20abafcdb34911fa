"""ArtifactFS: mount a git branch as a lazy, read-only filesystem (``artifact-fs``).

A client like any other: it talks to the server only over HTTP and git (a blobless clone,
protocol-v2 ``object-info`` for sizes, batched blob fetches), never through the server's
modules. ``cli`` is the command line, ``mountproc`` the process that owns one FUSE mount.
"""

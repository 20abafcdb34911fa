"""The write path of a mount: the copy-on-write overlay and staying in step with the branch.

    overlay.py        the overlay on disk: a journal of changed paths and their data files
    layer.py          FUSE's mutating calls on the tree, recorded in the overlay
    commit.py         the overlay as a commit (C git), pushed with a compare-and-swap
    branch.py         commit and refresh in the mount process; status; crash recovery
    control.py        the control socket's client (``artifact-fs commit``/``refresh``/``status``)
    controlserver.py  its server in the mount process
    options.py        the daemon's options for each mount (poll interval, autocommit)
"""

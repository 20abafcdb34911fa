"""Reading repos without a clone: content routes, the read helpers (compare, blame, archive,
recursive trees) and the dashboard's extra reads.
"""

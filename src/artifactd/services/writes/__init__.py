"""Writing without a git client: commits from files, refs, merges and notes, all through the
admission a push passes.
"""

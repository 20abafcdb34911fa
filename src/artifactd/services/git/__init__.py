"""The git data plane: who may do what, one smart-HTTP exchange, process slots, pushes admitted by
git's own hooks, and the blob fast path.
"""

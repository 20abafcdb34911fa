"""Repo lifecycle: create, list, delete, fork, import, search, maintenance scheduling and crash
recovery.
"""

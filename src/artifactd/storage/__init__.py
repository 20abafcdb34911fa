"""Stores: the SQL metadata store and the git repo store. Nothing here imports services or http."""

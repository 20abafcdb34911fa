"""The domain rules, written once, grouped by capability (git, reads, writes, events, access,
repos, backup) around the shared pieces here: the backend, names, limits, clocks, cursors and
health. Imports only storage and errors."""

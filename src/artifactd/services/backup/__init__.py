"""Backups of a running deployment and their restore (``artifactd backup`` / ``restore``).

``manifest`` is the format, ``take`` writes a backup, ``restore`` brings one up elsewhere.
"""

from artifactd.services.backup.manifest import BackupError
from artifactd.services.backup.restore import RestoreSummary, restore_backup
from artifactd.services.backup.take import BackupSummary, take_backup

__all__ = ["BackupError", "BackupSummary", "RestoreSummary", "restore_backup", "take_backup"]

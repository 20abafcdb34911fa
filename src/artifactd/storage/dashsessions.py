"""The ``dashboard_sessions`` table: insert, look up with the API token's row, delete, purge."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from artifactd.storage.schema import api_tokens, dashboard_sessions


@dataclass(frozen=True)
class SessionRow:
    token_id: str
    account_id: str
    permission: str
    revoked_us: int | None
    csrf: str
    expires_us: int


class DashboardSessions:
    def __init__(self, engine: Engine):
        self.engine = engine

    def insert(self, id_hash: str, token_id: str, csrf: str, created_us: int, expires_us: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(dashboard_sessions).values(
                id_hash=id_hash, token_id=token_id, csrf=csrf, created_us=created_us,
                expires_us=expires_us))

    def find(self, id_hash: str, now_us: int) -> SessionRow | None:
        """The live session and its API token's row (one indexed read), or None."""
        s, t = dashboard_sessions.c, api_tokens.c
        query = (select(s.token_id, t.account_id, t.permission, t.revoked_us, s.csrf, s.expires_us)
                 .join_from(dashboard_sessions, api_tokens, t.id == s.token_id)
                 .where(s.id_hash == id_hash, s.expires_us > now_us))
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return SessionRow(row.token_id, row.account_id, row.permission, row.revoked_us, row.csrf,
                          row.expires_us)

    def delete(self, id_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.id_hash == id_hash))

    def purge_expired(self, now_us: int, limit: int = 1000) -> int:
        """Delete up to ``limit`` expired sessions (by the expiry index); how many."""
        c = dashboard_sessions.c
        with self.engine.begin() as conn:
            old = select(c.id_hash).where(c.expires_us <= now_us).limit(limit).scalar_subquery()
            return int(conn.execute(delete(dashboard_sessions).where(c.id_hash.in_(old))).rowcount)

"""The SQL side of the ``s3`` repo store: each repo's generation, refs and pack list.

Every change of a repo's refs or packs is one transaction that bumps its generation, taken
first: the generation row is then also the repo's lock, so concurrent pushes of one repo
(from any node) queue on it instead of deadlocking on ref rows, and each compare-and-swap
sees the refs the previous one committed. Readers take the generation first, then the refs,
then the packs: a snapshot may be newer than its generation (the next read syncs again),
never older, and its packs always hold what its refs point at (packs are only added, or
replaced by maintenance with packs holding the same objects).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, String, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from artifactd.storage.schema import s3_leases, s3_packs, s3_refs, s3_repo_packs, s3_repos

ZERO_IDS = frozenset(("0" * 40, "0" * 64))


@dataclass(frozen=True)
class Pack:
    name: str  # the hash in git's file name pack-<name>.pack
    size_bytes: int  # .pack and .idx together


@dataclass(frozen=True)
class Snapshot:
    generation: int
    refs: tuple[tuple[str, str], ...]
    packs: tuple[Pack, ...]


@dataclass(frozen=True)
class RepoObjects:
    """What a repo needs, for a backup: its refs (SQL) and the bucket keys of its packs."""

    repo_id: str
    generation: int
    refs: tuple[tuple[str, str], ...]
    keys: tuple[str, ...]


def pack_keys(name: str) -> tuple[str, str]:
    """The bucket keys of one pack (its data, then its index)."""
    return f"packs/{name}.pack", f"packs/{name}.idx"


class StaleRef(Exception):
    """A compare-and-swap found a ref not at the value the push started from."""

    def __init__(self, ref: str):
        super().__init__(ref)
        self.ref = ref


class Catalog:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._dialect = engine.dialect.name

    def _upsert(self, table: Any) -> Any:
        return (postgresql.insert(table) if self._dialect == "postgresql"
                else sqlite.insert(table))

    def _bump(self, conn: Connection, repo_id: str, now_us: int) -> int:
        statement = self._upsert(s3_repos).values(repo_id=repo_id, generation=1, updated_us=now_us)
        statement = statement.on_conflict_do_update(
            index_elements=[s3_repos.c.repo_id],
            set_={"generation": s3_repos.c.generation + 1, "updated_us": now_us},
        ).returning(s3_repos.c.generation)
        return int(conn.execute(statement).scalar_one())

    # -- reads -------------------------------------------------------------------------------

    def generation(self, repo_id: str) -> int:
        """0 for a repo that never had refs or packs (an empty repo, or none at all)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(s3_repos.c.generation)
                                 .where(s3_repos.c.repo_id == repo_id)).scalar()
        return int(value or 0)

    def snapshot(self, repo_id: str) -> Snapshot:
        with self.engine.connect() as conn:
            generation = conn.execute(select(s3_repos.c.generation)
                                      .where(s3_repos.c.repo_id == repo_id)).scalar()
            refs = conn.execute(select(s3_refs.c.name, s3_refs.c.target)
                                .where(s3_refs.c.repo_id == repo_id)).all()
            packs = conn.execute(
                select(s3_packs.c.pack, s3_packs.c.size_bytes)
                .join(s3_repo_packs, s3_repo_packs.c.pack == s3_packs.c.pack)
                .where(s3_repo_packs.c.repo_id == repo_id)).all()
        return Snapshot(int(generation or 0), tuple((str(n), str(t)) for n, t in refs),
                        tuple(Pack(str(p), int(s)) for p, s in packs))

    def refs(self, repo_id: str) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(s3_refs.c.name, s3_refs.c.target)
                                .where(s3_refs.c.repo_id == repo_id)
                                .order_by(s3_refs.c.name)).all()
        return [(str(n), str(t)) for n, t in rows]

    def read_refs(self, repo_id: str, names: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = dict.fromkeys(names)
        if not names:
            return found
        with self.engine.connect() as conn:
            rows = conn.execute(select(s3_refs.c.name, s3_refs.c.target).where(
                s3_refs.c.repo_id == repo_id, s3_refs.c.name.in_(list(names)))).all()
        for name, target in rows:
            found[str(name)] = str(target)
        return found

    def repo_bytes(self, repo_id: str) -> int:
        """Bytes of the packs the repo lists (what its storage limit counts)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.coalesce(func.sum(s3_packs.c.size_bytes), 0))
                .join(s3_repo_packs, s3_repo_packs.c.pack == s3_packs.c.pack)
                .where(s3_repo_packs.c.repo_id == repo_id)).scalar()
        return int(value or 0)

    def repo_objects(self, repo_id: str) -> RepoObjects:
        """Everything a backup of the repo must copy (see ``RepoObjects``)."""
        snap = self.snapshot(repo_id)
        keys = tuple(key for pack in snap.packs for key in pack_keys(pack.name))
        return RepoObjects(repo_id, snap.generation, snap.refs, keys)

    def repo_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return [str(r) for r in conn.execute(select(s3_repos.c.repo_id)).scalars()]

    # -- writes ------------------------------------------------------------------------------

    def touch_packs(self, packs: Iterable[Pack], now_us: int) -> None:
        """Record packs about to be uploaded (or re-announced): the sweep leaves a pack alone
        for the grace period after its last touch, so an upload in flight is never swept."""
        rows = [{"pack": p.name, "size_bytes": p.size_bytes, "touched_us": now_us} for p in packs]
        if not rows:
            return
        with self.engine.begin() as conn:
            statement = self._upsert(s3_packs).values(rows)
            conn.execute(statement.on_conflict_do_update(
                index_elements=[s3_packs.c.pack],
                set_={"touched_us": statement.excluded.touched_us}))

    def commit_push(self, repo_id: str, updates: Sequence[tuple[str, str, str]],
                    packs: Sequence[str], now_us: int) -> int:
        """Compare-and-swap every (old, new, ref) and list ``packs``, in one transaction;
        returns the new generation. Raises ``StaleRef`` (nothing changed) when a ref is not
        at its ``old`` value, and ``LookupError`` when a pack was swept meanwhile."""
        with self.engine.begin() as conn:
            generation = self._bump(conn, repo_id, now_us)
            for old, new, ref in sorted(updates, key=lambda u: u[2]):
                if old in ZERO_IDS:
                    # RETURNING, not rowcount: psycopg counts a skipped insert as a row.
                    statement = self._upsert(s3_refs).values(repo_id=repo_id, name=ref, target=new)
                    done = len(conn.execute(statement.on_conflict_do_nothing()
                                            .returning(s3_refs.c.name)).all())
                elif new in ZERO_IDS:
                    done = conn.execute(delete(s3_refs).where(
                        s3_refs.c.repo_id == repo_id, s3_refs.c.name == ref,
                        s3_refs.c.target == old)).rowcount
                else:
                    done = conn.execute(update(s3_refs).where(
                        s3_refs.c.repo_id == repo_id, s3_refs.c.name == ref,
                        s3_refs.c.target == old).values(target=new)).rowcount
                if done != 1:
                    raise StaleRef(ref)
            self._list_packs(conn, repo_id, packs)
        return generation

    def _list_packs(self, conn: Connection, repo_id: str, packs: Sequence[str]) -> None:
        if not packs:
            return
        known = set(conn.execute(select(s3_packs.c.pack)
                                 .where(s3_packs.c.pack.in_(list(packs)))).scalars())
        if known != set(packs):
            raise LookupError(f"packs swept before their push committed: {set(packs) - known}")
        statement = self._upsert(s3_repo_packs).values(
            [{"repo_id": repo_id, "pack": name} for name in packs])
        conn.execute(statement.on_conflict_do_nothing())

    def publish(self, repo_id: str, refs: Sequence[tuple[str, str]], packs: Sequence[str],
                now_us: int) -> int:
        """Set the repo's whole state (an import, a fork): its refs and pack list replaced."""
        with self.engine.begin() as conn:
            generation = self._bump(conn, repo_id, now_us)
            conn.execute(delete(s3_refs).where(s3_refs.c.repo_id == repo_id))
            conn.execute(delete(s3_repo_packs).where(s3_repo_packs.c.repo_id == repo_id))
            if refs:
                conn.execute(insert(s3_refs), [
                    {"repo_id": repo_id, "name": n, "target": t} for n, t in refs])
            self._list_packs(conn, repo_id, packs)
        return generation

    def fork(self, parent_id: str, child_id: str, refs: Sequence[tuple[str, str]],
             now_us: int) -> int:
        """The child lists the parent's packs (rows, no bytes) and has ``refs``; returns the
        bytes of those packs. The packs' touch keeps them from a sweep racing the copy."""
        parent_packs = select(s3_repo_packs.c.pack).where(s3_repo_packs.c.repo_id == parent_id)
        with self.engine.begin() as conn:
            self._bump(conn, child_id, now_us)
            # Copied inside the database, in as many statements whatever the parent's size.
            conn.execute(insert(s3_repo_packs).from_select(
                ["repo_id", "pack"],
                select(literal(child_id, String), s3_repo_packs.c.pack)
                .where(s3_repo_packs.c.repo_id == parent_id)))
            size = conn.execute(
                update(s3_packs).where(s3_packs.c.pack.in_(parent_packs))
                .values(touched_us=now_us).returning(s3_packs.c.size_bytes)).scalars().all()
            if refs:
                conn.execute(insert(s3_refs), [
                    {"repo_id": child_id, "name": n, "target": t} for n, t in refs])
        return sum(int(s) for s in size)

    def forget_repo(self, repo_id: str, now_us: int) -> None:
        """Drop a repo's refs and pack list (its packs stay until the sweep finds them
        unlisted and past the grace period, counted from now)."""
        with self.engine.begin() as conn:
            packs = [str(p) for p in conn.execute(select(s3_repo_packs.c.pack)
                                                  .where(s3_repo_packs.c.repo_id == repo_id))
                     .scalars()]
            conn.execute(delete(s3_refs).where(s3_refs.c.repo_id == repo_id))
            conn.execute(delete(s3_repo_packs).where(s3_repo_packs.c.repo_id == repo_id))
            conn.execute(delete(s3_repos).where(s3_repos.c.repo_id == repo_id))
            conn.execute(delete(s3_leases).where(s3_leases.c.repo_id == repo_id))
            if packs:
                conn.execute(update(s3_packs).where(s3_packs.c.pack.in_(packs))
                             .values(touched_us=now_us))

    def swap_packs(self, repo_id: str, removed: Sequence[str], added: Sequence[str],
                   now_us: int) -> bool:
        """Maintenance: replace ``removed`` by ``added`` in the repo's list, if every removed
        pack is still listed (packs pushed meanwhile stay). False: nothing changed."""
        with self.engine.begin() as conn:
            self._bump(conn, repo_id, now_us)
            listed = set(conn.execute(select(s3_repo_packs.c.pack).where(
                s3_repo_packs.c.repo_id == repo_id)).scalars())
            if not set(removed) <= listed:
                conn.rollback()
                return False
            if removed:
                conn.execute(delete(s3_repo_packs).where(
                    s3_repo_packs.c.repo_id == repo_id, s3_repo_packs.c.pack.in_(list(removed))))
                conn.execute(update(s3_packs).where(s3_packs.c.pack.in_(list(removed)))
                             .values(touched_us=now_us))
            self._list_packs(conn, repo_id, [p for p in added if p not in listed])
        return True

    def sweepable(self, cutoff_us: int, limit: int = 500) -> list[str]:
        """Packs no repo lists, untouched since ``cutoff_us``."""
        listed = select(s3_repo_packs.c.pack).where(s3_repo_packs.c.pack == s3_packs.c.pack)
        with self.engine.connect() as conn:
            rows = conn.execute(select(s3_packs.c.pack).where(
                s3_packs.c.touched_us < cutoff_us, ~listed.exists()).limit(limit)).scalars()
            return [str(r) for r in rows]

    def drop_pack(self, name: str, cutoff_us: int) -> bool:
        """Remove a pack's row if it is still unlisted and untouched; then (only then) its
        objects may be deleted from the bucket."""
        listed = select(s3_repo_packs.c.pack).where(s3_repo_packs.c.pack == name)
        with self.engine.begin() as conn:
            done = conn.execute(delete(s3_packs).where(
                s3_packs.c.pack == name, s3_packs.c.touched_us < cutoff_us,
                ~listed.exists())).rowcount
        return bool(done)

    # -- maintenance leases -----------------------------------------------------------------

    def take_lease(self, repo_id: str, holder: str, now_us: int, seconds: float) -> bool:
        """One maintenance per repo across nodes; a lease past its expiry is taken over."""
        until = now_us + int(seconds * 1_000_000)
        with self.engine.begin() as conn:
            statement = self._upsert(s3_leases).values(repo_id=repo_id, holder=holder,
                                                       expires_us=until)
            conn.execute(statement.on_conflict_do_nothing())
            taken = conn.execute(update(s3_leases).where(
                s3_leases.c.repo_id == repo_id,
                (s3_leases.c.holder == holder) | (s3_leases.c.expires_us < now_us),
            ).values(holder=holder, expires_us=until)).rowcount
        return bool(taken)

    def release_lease(self, repo_id: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(s3_leases).where(s3_leases.c.repo_id == repo_id,
                                                 s3_leases.c.holder == holder))

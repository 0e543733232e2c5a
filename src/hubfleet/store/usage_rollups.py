"""Roll-ups of user days (migration 0020): who was active each day, compact enough that DAU/WAU/MAU of a
day reads ≤ 30 small rows fleet-wide, whatever the fleet's size.

`user_days` (one row per hub, username and day) stays the record; these tables are derived from it:

- `usage_people`: a number for each person (UserDay.identity), `usage_accounts`: a number for each username
  of a hub, dense per hub;
- `usage_hub_days(day, hub)`: the hub's DAU (`users`), a bitmap of its active accounts' numbers and the
  sorted numbers of its active people (4 bytes each);
- `usage_fleet_days(day)`: a bitmap of every person active that day, anywhere (≈ 12.5 kB at 100,000 people).

Database triggers on `user_days` (insert, delete, and updates of its key or identity) mark the (hub, day)
they touch in `usage_stale_days`, whoever wrote the row; `refresh` rebuilds marked days from `user_days`
(the collector calls it after every hub's collection, in the same transaction). The readers never trust a
marked day: they read its raw rows instead, so every count is exact even before a refresh.
"""

from __future__ import annotations

import sys
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Date, Index, Integer, LargeBinary, String, delete, func, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hubfleet.store.models import Base, UserDay


class UsagePerson(Base):
    """A person's number in the day bitmaps (never reused; persons are never deleted)."""

    __tablename__ = "usage_people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity: Mapped[str] = mapped_column(String(400), unique=True)


class UsageAccount(Base):
    """A hub username's number in its hub's day bitmaps: 0, 1, 2, ... per hub, in order of first use."""

    __tablename__ = "usage_accounts"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    number: Mapped[int] = mapped_column(Integer)


class UsageHubDay(Base):
    """Who was active on a hub on a day (rebuilt from user_days whenever they change)."""

    __tablename__ = "usage_hub_days"
    __table_args__ = (Index("ix_usage_hub_days_hub_day", "hub", "day"), {"sqlite_with_rowid": False})

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    users: Mapped[int] = mapped_column(Integer)
    """Distinct usernames: the hub's DAU."""
    accounts: Mapped[bytes] = mapped_column(LargeBinary)
    """Bitmap (little-endian) of the active UsageAccount numbers."""
    people: Mapped[bytes] = mapped_column(LargeBinary)
    """Sorted UsagePerson ids, unsigned 32-bit little-endian."""


class UsageFleetDay(Base):
    """Every person active on a day, on any hub: the union of that day's UsageHubDay.people."""

    __tablename__ = "usage_fleet_days"
    __table_args__ = {"sqlite_with_rowid": False}

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    people_count: Mapped[int] = mapped_column(Integer)
    """Fleet-wide DAU."""
    people: Mapped[bytes] = mapped_column(LargeBinary)
    """Bitmap (little-endian) of the active UsagePerson ids."""


class UsageStaleDay(Base):
    """A (hub, day) whose user_days changed since its roll-up was built (written by database triggers)."""

    __tablename__ = "usage_stale_days"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


# --------------------------------------------------------------------------- encodings


def pack_ids(ids: Iterable[int]) -> bytes:
    packed = array("I", sorted(ids))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_ids(blob: bytes) -> array[int]:
    ids = array("I")
    ids.frombytes(blob)
    if sys.byteorder == "big":
        ids.byteswap()
    return ids


def to_bitmap(numbers: Iterable[int]) -> int:
    """A Python int with bit n set for each n: OR and bit_count() on these are the whole query cost."""
    numbers = list(numbers)
    if not numbers:
        return 0
    buffer = bytearray(max(numbers) // 8 + 1)
    for n in numbers:
        buffer[n >> 3] |= 1 << (n & 7)
    return int.from_bytes(buffer, "little")


def bitmap_bytes(bits: int) -> bytes:
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def from_bytes(blob: bytes) -> int:
    return int.from_bytes(blob, "little")


@dataclass
class Members:
    """Who was active: numbered members as a bitmap, plus members without a number yet (days not refreshed
    since a new person or account appeared), by name. The two never overlap, so counts add up."""

    bits: int = 0
    extra: set[str] = field(default_factory=set)

    def add(self, other: Members) -> None:
        self.bits |= other.bits
        self.extra |= other.extra

    def count(self) -> int:
        return self.bits.bit_count() + len(self.extra)


def union(members: Iterable[Members]) -> Members:
    total = Members()
    for one in members:
        total.add(one)
    return total


# --------------------------------------------------------------------------- numbering


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Numbers:
    """Person ids and account numbers, created on first use, cached for one refresh."""

    def __init__(self, conn: Any, whole: Iterable[str] = ()) -> None:
        self.conn = conn
        self.whole = set(whole)
        """Hubs to read whole on first use (many of their days are refreshed: a back-fill, a catch-up)."""
        self.people: dict[str, int] = {}
        self.accounts: dict[str, dict[str, int]] = {}
        self.complete: set[str] = set()
        """Hubs whose every account is in `accounts`."""
        self.top: dict[str, int] = {}
        """Each hub's highest account number (-1: none)."""
        self.pending: list[dict[str, Any]] = []

    def person_ids(self, identities: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(identities) - self.people.keys())
        if wanted:
            self._load_people(wanted)
            missing = [who for who in wanted if who not in self.people]
            if missing:
                self.conn.execute(insert(UsagePerson), [{"identity": who} for who in missing])
                self._load_people(missing)
        return self.people

    def _load_people(self, identities: Sequence[str]) -> None:
        for chunk in _chunks(identities):
            query = select(UsagePerson.identity, UsagePerson.id).where(UsagePerson.identity.in_(chunk))
            self.people.update((who, n) for who, n in self.conn.execute(query))

    def account_numbers(self, hub: str, usernames: Iterable[str]) -> dict[str, int]:
        """Numbers of `usernames` on `hub`, new ones numbered after the hub's highest. A hub met for the
        first time with many names is read whole (the back-fill), else only the names asked for."""
        known = self.accounts.setdefault(hub, {})
        wanted = sorted(set(usernames) - known.keys())
        if not wanted:
            return known
        if hub not in self.complete:
            query = select(UsageAccount.username, UsageAccount.number).where(UsageAccount.hub == hub)
            if len(wanted) <= 200 and hub not in self.whole:
                for chunk in _chunks(wanted):
                    found = self.conn.execute(query.where(UsageAccount.username.in_(chunk)))
                    known.update((name, n) for name, n in found)
            else:
                known.update((name, n) for name, n in self.conn.execute(query))
                self.complete.add(hub)
                self.top[hub] = max(known.values(), default=-1)
        missing = [name for name in wanted if name not in known]
        if missing:
            if hub not in self.top:
                top = self.conn.execute(select(func.max(UsageAccount.number)).where(UsageAccount.hub == hub))
                self.top[hub] = -1 if (value := top.scalar()) is None else int(value)
            fresh = {name: self.top[hub] + 1 + i for i, name in enumerate(missing)}
            self.top[hub] += len(missing)
            self.pending += [{"hub": hub, "username": name, "number": n} for name, n in fresh.items()]
            known.update(fresh)
        return known

    def write(self) -> None:
        """Store the accounts numbered since the last write, in one statement."""
        if self.pending:
            self.conn.execute(insert(UsageAccount), self.pending)
            self.pending = []


# --------------------------------------------------------------------------- refresh (the writer)


def _core(conn: Any) -> Any:
    """The Connection under a Session (flushed): the ORM's per-statement and per-row cost was most of a
    small refresh and of a query's time."""
    if isinstance(conn, Session):
        conn.flush()
        return conn.connection()
    return conn


def refresh(conn: Any, hub: str | None = None) -> int:
    """Rebuild every stale (hub, day) (of `hub`, default all) from user_days, inside the caller's
    transaction (`conn`: a Session or Connection). Returns how many hub-days were rebuilt.

    A fleet day only gains people in the common case (new activity): its bitmap is OR-ed with the hub
    day's; when a hub day lost someone (an identity relabelled, a row deleted) it is rebuilt from all of
    that day's hub days."""
    conn = _core(conn)
    query = select(UsageStaleDay.hub, UsageStaleDay.day)
    if hub is not None:
        query = query.where(UsageStaleDay.hub == hub)
    stale: dict[date, set[str]] = defaultdict(set)
    for name, day in conn.execute(query).all():
        stale[day].add(name)
    days_of_hub: dict[str, int] = defaultdict(int)
    for hubs in stale.values():
        for name in hubs:
            days_of_hub[name] += 1
    numbers = _Numbers(conn, whole=(name for name, n in days_of_hub.items() if n > 2))
    for day in sorted(stale):
        _refresh_day(conn, numbers, day, stale[day])
    return sum(len(hubs) for hubs in stale.values())


def _refresh_day(conn: Any, numbers: _Numbers, day: date, hubs: set[str]) -> None:
    query = select(UserDay.hub, UserDay.username, UserDay.identity).where(UserDay.day == day)
    if len(hubs) <= 100:
        query = query.where(UserDay.hub.in_(sorted(hubs)))
    rows: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, username, who in conn.execute(query).all():
        if name in hubs:
            rows[name].append((username, who))
    old_query = select(UsageHubDay.hub, UsageHubDay.people).where(UsageHubDay.day == day)
    if len(hubs) <= 100:
        old_query = old_query.where(UsageHubDay.hub.in_(sorted(hubs)))
    old = {name: blob for name, blob in conn.execute(old_query).all() if name in hubs}
    ids = numbers.person_ids(who for found in rows.values() for _, who in found)
    fresh_rows = []
    gained: set[int] = set()
    lost = False
    for name in sorted(hubs):
        found = rows.get(name, [])
        people = {ids[who] for _, who in found}
        if name in old:
            before = set(unpack_ids(old[name]))
            lost = lost or not before <= people
            gained |= people - before
        else:
            gained |= people
        if found:
            accounts = numbers.account_numbers(name, (username for username, _ in found))
            usernames = {username for username, _ in found}
            fresh_rows.append(
                {
                    "day": day,
                    "hub": name,
                    "users": len(usernames),
                    "accounts": bitmap_bytes(to_bitmap(accounts[u] for u in usernames)),
                    "people": pack_ids(people),
                }
            )
    numbers.write()
    for chunk in _chunks(sorted(hubs)):
        conn.execute(delete(UsageHubDay).where(UsageHubDay.day == day, UsageHubDay.hub.in_(chunk)))
        conn.execute(delete(UsageStaleDay).where(UsageStaleDay.day == day, UsageStaleDay.hub.in_(chunk)))
    if fresh_rows:
        conn.execute(insert(UsageHubDay), fresh_rows)
    fleet = conn.execute(select(UsageFleetDay.people).where(UsageFleetDay.day == day)).scalar()
    if lost or fleet is None:
        everyone: set[int] = set()
        for (blob,) in conn.execute(select(UsageHubDay.people).where(UsageHubDay.day == day)):
            everyone.update(unpack_ids(blob))
        bits = to_bitmap(everyone)
    elif gained:
        bits = from_bytes(fleet) | to_bitmap(gained)
    else:
        return
    conn.execute(delete(UsageFleetDay).where(UsageFleetDay.day == day))
    if bits:
        conn.execute(
            insert(UsageFleetDay),
            [{"day": day, "people_count": bits.bit_count(), "people": bitmap_bytes(bits)}],
        )


# --------------------------------------------------------------------------- readers


def _stale(conn: Any, first: date, last: date, hubs: Sequence[str] | None) -> set[tuple[str, date]]:
    query = select(UsageStaleDay.hub, UsageStaleDay.day).where(
        UsageStaleDay.day >= first, UsageStaleDay.day <= last
    )
    found = {(hub, day) for hub, day in conn.execute(query)}
    if hubs is not None:
        wanted = set(hubs)
        found = {(hub, day) for hub, day in found if hub in wanted}
    return found


COVER_CHECK = 50
"""Hub lists this long are checked against every hub with accounts (a read of every account's hub): one
that names them all is answered from the fleet bitmaps. Shorter lists never pay for the check."""


def _covers_every_hub(conn: Any, hubs: Sequence[str]) -> bool:
    """Whether `hubs` names every hub that ever had a user day (then the fleet bitmaps answer)."""
    wanted = set(hubs)
    known = select(UsageAccount.hub).union(select(UsageStaleDay.hub))
    return all(hub in wanted for (hub,) in conn.execute(known))


def people_by_day(
    conn: Any, first: date, last: date, hubs: Sequence[str] | None = None
) -> dict[date, Members]:
    """The people (UserDay.identity) active each day from `first` to `last` on `hubs` (default: all);
    days without anyone are absent."""
    conn = _core(conn)
    if hubs is not None and len(hubs) >= COVER_CHECK and _covers_every_hub(conn, hubs):
        hubs = None
    stale_days = {day for _, day in _stale(conn, first, last, hubs)}
    found: dict[date, Members] = {}
    ids: dict[date, set[int]] = defaultdict(set)
    if hubs is None:
        query = select(UsageFleetDay.day, UsageFleetDay.people).where(
            UsageFleetDay.day >= first, UsageFleetDay.day <= last
        )
        for day, blob in conn.execute(query).all():
            if day not in stale_days:
                found[day] = Members(from_bytes(blob))
    else:
        query = select(UsageHubDay.day, UsageHubDay.people).where(
            UsageHubDay.day >= first, UsageHubDay.day <= last, UsageHubDay.hub.in_(list(hubs))
        )
        for day, blob in conn.execute(query).all():
            if day not in stale_days:
                ids[day].update(unpack_ids(blob))
    unnumbered: dict[date, set[str]] = defaultdict(set)
    if stale_days:
        raw = (
            select(UserDay.day, UserDay.identity, UsagePerson.id)
            .outerjoin(UsagePerson, UsagePerson.identity == UserDay.identity)
            .where(UserDay.day.in_(sorted(stale_days)))
        )
        if hubs is not None:
            raw = raw.where(UserDay.hub.in_(list(hubs)))
        for day, who, number in conn.execute(raw).all():
            if number is None:
                unnumbered[day].add(who)
            else:
                ids[day].add(number)
    # Fleet-wide, ids are bits of the fleet bitmaps. For some hubs they are renumbered 0..n over the people
    # seen in the range: a hub's bitmaps are then as small as its people, not as the whole fleet's.
    local = None if hubs is None else {n: i for i, n in enumerate(sorted(set().union(*ids.values())))}
    for day in ids.keys() | unnumbered.keys():
        people = ids.get(day, set())
        bits = to_bitmap(people if local is None else (local[n] for n in people))
        found[day] = Members(bits, unnumbered.get(day, set()))
    return found


def accounts_by_hub(
    conn: Any, first: date, last: date, hubs: Sequence[str] | None = None
) -> dict[str, Members]:
    """Each hub's usernames active at least once from `first` to `last` (hubs without any: absent).

    The hot path of a fleet's per-hub WAU/MAU: one int OR per (hub, day) row, no per-row objects."""
    conn = _core(conn)
    stale = _stale(conn, first, last, hubs)
    bits: dict[str, int] = defaultdict(int)
    if stale:
        query = select(UsageHubDay.hub, UsageHubDay.day, UsageHubDay.accounts)
    else:
        query = select(UsageHubDay.hub, UsageHubDay.accounts)  # no day: no date parsed per row
    query = query.where(UsageHubDay.day >= first, UsageHubDay.day <= last)
    if hubs is not None:
        query = query.where(UsageHubDay.hub.in_(list(hubs)))
    if stale:
        for hub, day, blob in conn.execute(query).all():
            if (hub, day) not in stale:
                bits[hub] |= int.from_bytes(blob, "little")
    else:
        for hub, blob in conn.execute(query).all():
            bits[hub] |= int.from_bytes(blob, "little")
    found = {hub: Members(value) for hub, value in bits.items()}
    if stale:
        raw = (
            select(UserDay.hub, UserDay.day, UserDay.username, UsageAccount.number)
            .outerjoin(
                UsageAccount, (UsageAccount.hub == UserDay.hub) & (UsageAccount.username == UserDay.username)
            )
            .where(UserDay.day.in_(sorted({day for _, day in stale})))
        )
        if hubs is not None:
            raw = raw.where(UserDay.hub.in_(list(hubs)))
        numbered: dict[str, set[int]] = defaultdict(set)
        for hub, day, username, number in conn.execute(raw).all():
            if (hub, day) not in stale:
                continue
            members = found.setdefault(hub, Members())
            if number is None:
                members.extra.add(username)
            else:
                numbered[hub].add(number)
        for hub, numbers in numbered.items():
            found[hub].bits |= to_bitmap(numbers)
    return {hub: members for hub, members in found.items() if members.count()}

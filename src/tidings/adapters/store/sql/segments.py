"""Segments in SQL: a segment becomes a query over `users` and the `user_attributes` index
(each attribute condition an index lookup), and the rows of that index are written here with
the profile they come from.

A page of a segment (users by id after a cursor) is found one of two ways, chosen by how many
index rows its conditions meet, counted first up to a bound (which costs at most that many
index entries each):

- Driven: when the segment cannot hold without a condition met by few rows (a rare value, a
  narrow range; for an `$or`, one such condition in every branch), those users are the
  candidates, `users.id IN (SELECT user_id FROM user_attributes ...)`, and the rest of the
  segment is checked on each. A rare value costs what it finds.
- Scanned: otherwise users are read in id order and each condition is probed per user,
  `(SELECT 1 FROM user_attributes WHERE user_id = users.id ... LIMIT 1) IS NOT NULL`: a page
  of a common value stops a little after its last user instead of reading every match first
  (50,000 for half of 100,000 users) to keep 50.

Neither planner makes this choice well on its own: SQLite has no per-value statistics and
materialises every `IN`, and PostgreSQL, which turns `IN` and `EXISTS` alike into semi-joins,
sorted all the matches of a wide numeric range to return the first 50. The LIMIT in the probe
keeps PostgreSQL from turning it into a join. SQLite takes the index that serves most of a
WHERE clause, so a term that should not lead it is written with SQLite's no-op unary `+`
(which keeps a term from choosing an index): a range in a probe (the user's own rows are at
hand in `ix_user_attributes_user`), a profile field while reading users in id order.

A count reads every match anyway: it is set algebra on the index (INTERSECT for `$and`, UNION
for `$or`, EXCEPT for a negation), which costs the sizes of the sets, not a probe per user.
Counts read the index without the users table: its rows are written in the transaction of the
profile they come from, and go with the user and with the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    delete,
    except_,
    false,
    func,
    insert,
    intersect,
    literal,
    or_,
    select,
    true,
    union,
    union_all,
)
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from ....domain.segments import (
    And,
    Exists,
    In,
    NotIn,
    Or,
    Range,
    RangeOp,
    Segment,
    Value,
    attribute_path,
    attribute_rows,
    epoch_ms,
)
from .schema import user_attributes as ua
from .schema import users

MAX_DRIVER_ROWS = 10_000  # the most candidates a page reads (a page of 1,000 at 10%)
MIN_DRIVER_ROWS = 2_000  # below this, candidates always beat scanning (at 2%, 50 users take 2,500)
MAX_ESTIMATES = 16  # conditions counted per page; the others are only probed

Leaf = In | NotIn | Exists | Range
Ids = Select[Any] | CompoundSelect[Any]


async def page_clause(conn: Any, app_id: str, segment: Segment, after: str | None,
                      limit: int) -> ColumnElement[bool]:
    """What keeps the users of a page of `segment` (the caller still says `users.app_id =
    app_id` and `users.id > after`, orders by id and applies `limit`)."""
    query = _Query(app_id, conn.dialect.name == "postgresql", after)
    cap = min(MAX_DRIVER_ROWS, max(MIN_DRIVER_ROWS, 10 * limit))
    sizes: dict[Leaf, int] = {}
    for leaf in _positive_leaves(segment)[:MAX_ESTIMATES]:
        if leaf not in sizes:
            sizes[leaf] = await query.rows_up_to(conn, leaf, cap)
    driver = query.driver(segment, {leaf: n for leaf, n in sizes.items() if n < cap}, cap)
    if driver is None:
        return query.clause(segment, None)
    candidates, _, driving = driver
    return and_(users.c.id.in_(candidates), query.clause(segment, driving))


async def count_users(conn: Any, app_id: str, segment: Segment | None) -> int:
    """How many users of `app_id` are in `segment` (all of them when None)."""
    query = _Query(app_id, conn.dialect.name == "postgresql", None)
    if segment is None:
        return await _scalar(conn, select(func.count()).select_from(query.everyone().subquery()))
    if isinstance(segment, NotIn | Exists) and attribute_path(segment.field) is not None:
        opposite: Leaf | None = (In(segment.field, segment.values) if isinstance(segment, NotIn)
                                 else Exists(segment.field, True) if not segment.present else None)
        if opposite is not None:
            return await count_users(conn, app_id, None) - await count_users(conn, app_id, opposite)
    if isinstance(segment, In | Range | Exists) and attribute_path(segment.field) is not None:
        return await _count_leaf(conn, query, segment)
    found = query.ids(segment)
    if isinstance(found, CompoundSelect):  # INTERSECT, UNION and EXCEPT give each id once
        return await _scalar(conn, select(func.count()).select_from(found.subquery()))
    sub = found.subquery()
    return await _scalar(conn, select(func.count(sub.c[0].distinct())))


async def _count_leaf(conn: Any, query: _Query, leaf: In | Range | Exists) -> int:
    """The users meeting one attribute condition, from its index rows alone. A user has one
    row per path unless the path holds an array (then one per distinct element): unless it
    does, or the condition names one value, counting rows counts users."""
    path = attribute_path(leaf.field)
    assert path is not None
    selects = [select(ua.c.user_id).where(*query.rows(path, kind)) for kind in query.kinds(leaf)]
    if not selects:
        return 0
    one_value = isinstance(leaf, In) and len(leaf.values) == 1
    if one_value or not await _has_arrays(conn, query.app_id, path):
        total = 0
        for rows in selects:
            total += await _scalar(conn, select(func.count()).select_from(rows.subquery()))
        return total
    found = selects[0].subquery() if len(selects) == 1 else union_all(*selects).subquery()
    return await _scalar(conn, select(func.count(found.c.user_id.distinct())))


async def _scalar(conn: Any, q: Select[Any]) -> int:
    return int((await conn.execute(q)).scalar_one())


def _positive_leaves(segment: Segment) -> list[Leaf]:
    """The conditions that could drive a query: those met by users having something."""
    if isinstance(segment, And | Or):
        return [leaf for part in segment.parts for leaf in _positive_leaves(part)]
    if isinstance(segment, NotIn) or (isinstance(segment, Exists) and not segment.present):
        return []
    return [segment]


async def _has_arrays(conn: Any, app_id: str, path: str) -> bool:
    q = select(literal(1)).where(ua.c.app_id == app_id, ua.c.path == path,
                                 ua.c.kind == "a").limit(1)
    return (await conn.execute(q)).first() is not None


def _unindexed(column: Any) -> Any:
    """SQLite's `+column`: the same value, but no index is chosen for the term."""
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def _float(value: Value) -> float:
    assert isinstance(value, int | float) and not isinstance(value, bool)
    return float(value)


def _operand(ids: Ids) -> Select[Any]:
    """A compound select nested in another one, which SQLite takes only as a subquery."""
    return select(ids.subquery().c[0]) if isinstance(ids, CompoundSelect) else ids


class _Query:
    def __init__(self, app_id: str, postgres: bool, after: str | None) -> None:
        self.app_id = app_id
        self.postgres = postgres
        self.after = after

    def kinds(self, leaf: Leaf, probe: bool = False) -> list[ColumnElement[bool] | None]:
        """What a row of the leaf's path must hold, one condition per kind of value the leaf
        names (each kind is its own index range): the leaf holds when a row meets any of them
        (NotIn and a missing Exists: when none does). None: any row."""
        if isinstance(leaf, Exists):
            return [None]
        if isinstance(leaf, In | NotIn):
            texts = [v for v in leaf.values if isinstance(v, str)]
            bools = sorted({1.0 if v else 0.0 for v in leaf.values if isinstance(v, bool)})
            numbers = [_float(v) for v in leaf.values if not isinstance(v, str | bool)]
            found: list[ColumnElement[bool] | None] = []
            if texts:
                found.append(and_(ua.c.kind == "s", _one_of(ua.c.text, texts)))
            if numbers:
                found.append(and_(ua.c.kind == "n", _one_of(ua.c.num, numbers)))
            if bools:
                found.append(and_(ua.c.kind == "b", _one_of(ua.c.num, bools)))
            return found
        strings = {isinstance(value, str) for _, value in leaf.bounds}
        if len(strings) != 1:  # a string and a number bound one value: nothing is both
            return []
        kind = "s" if strings == {True} else "n"
        column: Any = ua.c.text if kind == "s" else ua.c.num
        if kind == "s" and self.postgres:
            column = column.collate("C")  # code point order, as Python compares strings
        if probe and not self.postgres:
            column = _unindexed(column)
        bounds = [_compare(column, op, v if kind == "s" else _float(v)) for op, v in leaf.bounds]
        return [and_(ua.c.kind == kind, *bounds)]

    def rows(self, path: str, condition: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
        where = [ua.c.app_id == self.app_id, ua.c.path == path]
        return where if condition is None else [*where, condition]

    async def rows_up_to(self, conn: Any, leaf: Leaf, cap: int) -> int:
        path = attribute_path(leaf.field)
        if path is None:
            found = [select(literal(1)).where(users.c.app_id == self.app_id, self.profile(leaf))]
        else:
            found = [select(literal(1)).where(*self.rows(path, kind)) for kind in self.kinds(leaf)]
        total = 0
        for rows in found:
            total += await _scalar(conn, select(func.count()).select_from(rows.limit(cap).subquery()))
        return min(total, cap)

    # --- a page -----------------------------------------------------------------------------
    def driver(self, s: Segment, sparse: dict[Leaf, int],
               cap: int) -> tuple[Ids, int, Leaf | None] | None:
        """The few users the segment cannot do without, how many index rows name them, and
        the condition they meet already when it is one the segment needs (no probe for it)."""
        if isinstance(s, And):
            found = [d for d in (self.driver(p, sparse, cap) for p in s.parts) if d is not None]
            return min(found, key=lambda d: d[1]) if found else None
        if isinstance(s, Or):
            branches = [self.driver(p, sparse, cap) for p in s.parts]
            chosen = [d for d in branches if d is not None]
            size = sum(d[1] for d in chosen)
            if not chosen or len(chosen) < len(branches) or size >= cap:
                return None
            if len(chosen) == 1:
                return chosen[0][0], size, None
            return union_all(*(_operand(d[0]) for d in chosen)), size, None
        if s not in sparse:
            return None
        path = attribute_path(s.field)
        if path is None:
            q = select(users.c.id).where(users.c.app_id == self.app_id, self.profile(s))
            if self.after is not None:
                q = q.where(users.c.id > self.after)
            return q, sparse[s], s
        selects = []
        for kind in self.kinds(s):
            q = select(ua.c.user_id).where(*self.rows(path, kind))
            if self.after is not None:
                q = q.where(ua.c.user_id > self.after)
            selects.append(q)
        if not selects:
            return None
        return (selects[0] if len(selects) == 1 else union_all(*selects)), sparse[s], s

    def clause(self, s: Segment, met: Leaf | None) -> ColumnElement[bool]:
        """The segment as probes per user; `met` is a condition the candidates meet already."""
        if s == met:  # the candidates meet it, wherever it appears
            return true()
        if isinstance(s, And):
            return and_(true(), *(self.clause(p, met) for p in s.parts))
        if isinstance(s, Or):
            return or_(false(), *(self.clause(p, met) for p in s.parts))
        path = attribute_path(s.field)
        if path is None:
            return self.profile(s, scanning=True)
        kinds = self.kinds(s, probe=True)
        condition = (false() if not kinds else kinds[0] if len(kinds) == 1
                     else or_(*(k for k in kinds if k is not None)))
        first = (select(literal(1)).where(*self.rows(path, condition), ua.c.user_id == users.c.id)
                 .limit(1).scalar_subquery())
        negated = isinstance(s, NotIn) or (isinstance(s, Exists) and not s.present)
        return first.is_(None) if negated else first.is_not(None)

    # --- a count ----------------------------------------------------------------------------
    def everyone(self) -> Select[Any]:
        return select(users.c.id.label("user_id")).where(users.c.app_id == self.app_id)

    def ids(self, s: Segment) -> Ids:
        """The ids of the users in the segment: each once from a compound select (INTERSECT,
        UNION, EXCEPT), maybe more from a plain one (a condition met by several elements)."""
        if isinstance(s, And | Or):
            if not s.parts:
                return self.everyone() if isinstance(s, And) else self.everyone().where(false())
            if len(s.parts) == 1:
                return self.ids(s.parts[0])
            combine = intersect if isinstance(s, And) else union
            return combine(*(_operand(self.ids(p)) for p in s.parts))
        path = attribute_path(s.field)
        if path is None:
            return self.everyone().where(self.profile(s))
        if isinstance(s, NotIn):
            return except_(self.everyone(), _operand(self.ids(In(s.field, s.values))))
        if isinstance(s, Exists) and not s.present:
            return except_(self.everyone(), _operand(self.ids(Exists(s.field, True))))
        selects = [select(ua.c.user_id).where(*self.rows(path, kind)) for kind in self.kinds(s)]
        if not selects:
            return self.everyone().where(false())
        return selects[0] if len(selects) == 1 else union(*selects)

    def profile(self, s: Leaf, scanning: bool = False) -> ColumnElement[bool]:
        """`scanning`: users are read in id order, which SQLite must not trade for the
        field's own index (and a sort of everything it finds)."""
        if isinstance(s, Exists):
            named = users.c[s.field]
            return named.is_not(None) if s.present else named.is_(None)
        column: Any = users.c[s.field]
        if scanning and not self.postgres:
            column = _unindexed(column)
        if isinstance(s, Range):
            if s.field != "created_at" and self.postgres:
                column = column.collate("C")
            return and_(true(), *(_compare(column, op, _stored(v)) for op, v in s.bounds))
        values = [_stored(v) for v in s.values]
        if isinstance(s, In):
            return _one_of(column, values)
        return or_(column.is_(None), ~_one_of(column, values))


def _stored(value: Value) -> str | int:
    """A profile field's value as its column holds it (created_at in milliseconds)."""
    if isinstance(value, str):
        return value
    assert not isinstance(value, bool | int | float)
    return epoch_ms(value)


def _one_of(column: Any, values: list[Any]) -> ColumnElement[bool]:
    found: ColumnElement[bool] = column == values[0] if len(values) == 1 else column.in_(values)
    return found


def _compare(column: Any, op: RangeOp, value: Any) -> ColumnElement[bool]:
    found: ColumnElement[bool]
    if op == "$gt":
        found = column > value
    elif op == "$gte":
        found = column >= value
    elif op == "$lt":
        found = column < value
    else:
        found = column <= value
    return found


# --- the index's rows ---------------------------------------------------------------------
async def write_attributes(conn: Any, app_id: str, user_id: str,
                           attributes: Mapping[str, Any]) -> None:
    """Replace the user's rows with those of `attributes`."""
    await forget_user(conn, app_id, user_id)
    rows = [{"app_id": app_id, "user_id": user_id, "path": path, "kind": kind, "text": text,
             "num": num} for path, kind, text, num in attribute_rows(attributes)]
    if rows:
        await conn.execute(insert(ua), rows)


async def forget_user(conn: Any, app_id: str, user_id: str) -> None:
    await conn.execute(delete(ua).where(ua.c.app_id == app_id, ua.c.user_id == user_id))


async def forget_attributes(conn: Any, app_id: str) -> None:
    """Drop every attribute row of the app (the app is being deleted)."""
    await conn.execute(delete(ua).where(ua.c.app_id == app_id))

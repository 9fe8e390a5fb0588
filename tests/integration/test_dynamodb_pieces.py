"""How a DynamoDB unit of work too large for one transaction is cut (pieces.py): whole groups,
at most 100 actions and 3.8 MB each, the writes marked `last` in the last one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tidings.adapters.store.dynamodb.pieces import (
    MAX_BYTES,
    MAX_ITEMS,
    TooLarge,
    fits_one,
    pieces,
    size_of,
)


@dataclass
class W:
    group: str | None
    size: int = 100
    optimistic: bool = False
    last: bool = False


def test_groups_stay_whole_and_pieces_stay_within_the_limits():
    writes = [W(f"u{u}") for u in range(40) for _ in range(6)]  # 240 writes, 40 groups
    cut = pieces(writes)
    assert [len(p) for p in cut] == [96, 96, 48]
    for p in cut:
        groups = {w.group for w in p}
        assert all(sum(1 for w in writes if w.group == g) == sum(1 for w in p if w.group == g)
                   for g in groups)


def test_last_writes_commit_in_the_last_piece_and_reserve_leaves_room():
    writes = [W("marker", last=True)] + [W(f"u{u}") for u in range(30) for _ in range(5)]
    cut = pieces(writes, reserve=1)
    assert all(len(p) <= MAX_ITEMS - 1 for p in cut)
    assert [w for w in cut[-1] if w.last] == [writes[0]]
    assert not any(w.last for p in cut[:-1] for w in p)


def test_a_group_larger_than_a_transaction_is_split_with_its_optimistic_writes_last():
    big = [W("u1", optimistic=True)] + [W("u1") for _ in range(250)]
    cut = pieces(big)
    assert [len(p) for p in cut] == [100, 100, 51]
    assert cut[-1][-1].optimistic and not any(w.optimistic for p in cut[:-1] for w in p)


def test_a_split_group_keeps_its_optimistic_writes_together_in_one_piece():
    """A user with many notifications in one unit (a group commit of sends to one user): its
    plain writes may spread over transactions, but its counter and stream events, made again
    together on a moved counter, never straddle two."""
    big = [W("u1") for _ in range(98)] + [W("u1", optimistic=True) for _ in range(31)]
    cut = pieces(big, reserve=1)
    holding = [i for i, p in enumerate(cut) if any(w.optimistic for w in p)]
    assert len(holding) == 1 and sum(w.optimistic for w in cut[holding[0]]) == 31
    assert all(len(p) <= MAX_ITEMS - 1 for p in cut)


def test_what_cannot_be_cut_is_refused_before_anything_is_written():
    with pytest.raises(TooLarge):
        pieces([W("u1", optimistic=True) for _ in range(101)])
    with pytest.raises(TooLarge):
        pieces([W("x", last=True) for _ in range(100)], reserve=1)


def test_bytes_cut_as_well_as_counts():
    writes = [W(f"u{u}", size=300_000) for u in range(30)]
    cut = pieces(writes)
    assert all(sum(w.size for w in p) <= MAX_BYTES for p in cut)
    assert len(cut) == 3 and not fits_one(writes) and fits_one(writes[:12])


def test_size_of_is_at_least_what_dynamodb_counts():
    # DynamoDB: names and values, strings as UTF-8 bytes, binary as its bytes.
    assert size_of({"pk": {"S": "é"}}) >= len("pk") + len("é".encode())
    assert size_of({"b": {"B": b"\x00" * 1000}}) >= 1 + 1000
    assert size_of({"b": {"B": b"\x00" * 1000}}) < 1100


@pytest.mark.parametrize("count", [0, 1, 100])
def test_small_sets_make_one_piece(count):
    assert len(pieces([W("g") for _ in range(count)])) == (1 if count else 0)


def test_shards_are_stable_and_recognised():
    from tidings.adapters.store.dynamodb import keys

    # A CRC, not Python's hash(): the same shard in every process (PYTHONHASHSEED differs).
    assert keys.sharded("DUE#D", "01J") == "DUE#D#14"
    assert {keys.sharded("DUE#D", str(i)) for i in range(200)} == set(keys.shards("DUE#D"))
    assert keys.sharded("DUE#D", "01J") in keys.shards("DUE#D")
    assert len(set(keys.shards("DUE#D"))) == keys.SHARDS
    assert keys.in_shards("DUE#D#07", "DUE#D") and not keys.in_shards("DUE#D", "DUE#D")
    assert not keys.in_shards("DUE#D#07#x", "DUE#D") and not keys.in_shards(None, "DUE#D")

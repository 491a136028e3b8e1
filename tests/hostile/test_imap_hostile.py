"""A hostile IMAP server: what it claims must cost us what its bytes cost, and one bad
message must not hold back the rest of its folder.

Parser-level shapes are timed at two sizes in one run (doubling the input may cost at most
~2.5x); end-to-end shapes run a sync against a scripted server on loopback (fake_imap).
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from database.models import Account, Attachment, Folder, Message, Provider
from services.errors import ProviderTemporaryError
from services.imap.client import ImapClient, ImapProtocolViolation
from services.imap.protocol import (
    MAX_UID,
    ImapProtocolError,
    UidSet,
    copy_uids,
    literal_size,
    parse_items,
)
from services.imap.responses import fetch_attrs, search_ranges
from services.imap.sync import plan, sync_account
from tests.factories import create_tenant, create_user
from tests.hostile.fake_imap import HANGUP, FakeImap

RATIO = 2.5


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def assert_linear(make: Callable[[int], Any], work: Callable[[Any], object], n: int) -> None:
    """work(make(2n)) costs at most RATIO x work(make(n)): best of five runs each, taken in
    turns (a busy neighbour slows both) and without the cyclic GC, whose passes grow with
    the whole heap, not with the work measured. The machine is shared, so a ratio over the
    bound is measured again, up to three times: a quadratic cost fails every time."""
    small, big = make(n), make(2 * n)
    seen = []
    for _ in range(3):
        t1 = t2 = float("inf")
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                t1 = min(t1, _timed(lambda: work(small)))
                t2 = min(t2, _timed(lambda: work(big)))
        finally:
            gc.enable()
        if t2 <= RATIO * t1 + 0.002:
            return
        seen.append(f"{t1:.4f}s -> {t2:.4f}s")
    raise AssertionError(f"n={n} -> 2n: {seen}")


def _message(i: int, body: bytes = b"hello") -> bytes:
    return (
        b"From: a%d@example.com\r\nTo: b@example.com\r\nSubject: note %d\r\n"
        b"Message-ID: <m%d@example.com>\r\n\r\n%s %d\r\n" % (i, i, i, body, i)
    )


# -- parser level ------------------------------------------------------------------------


def test_vanished_of_every_uid_is_one_range_never_a_list() -> None:
    start = time.perf_counter()
    gone = UidSet.parse("1:4294967295")
    assert time.perf_counter() - start < 0.01
    assert gone.ranges() == [(1, MAX_UID)] and gone.count == MAX_UID
    assert 1 in gone and MAX_UID in gone and 0 not in gone and MAX_UID + 1 not in gone
    assert gone.below(6).ranges() == [(1, 5)]
    assert UidSet.parse("9:3,4,20:*").ranges() == [(3, 9), (20, MAX_UID)]


def test_uid_set_parse_and_membership_cost_grows_linearly() -> None:
    def make(n: int) -> str:
        return ",".join(f"{3 * i + 1}:{3 * i + 2}" for i in range(n))

    def work(text: str) -> None:
        s = UidSet.parse(text)
        assert all(3 * i + 1 in s for i in range(0, s.count // 2, 97))

    assert_linear(make, work, 30_000)


@pytest.mark.parametrize("bad", ["0", "4294967296", "1:99999999999", "x", "1:", "9" * 5000])
def test_uid_set_out_of_range_or_garbage_is_a_protocol_error(bad: str) -> None:
    with pytest.raises(ImapProtocolError):
        UidSet.parse(bad)


def test_copyuid_pairs_uids_in_the_order_written() -> None:
    answer = [b"* OK [COPYUID 38505 304,319:320 3956:3958] Moved", b"A1 OK done"]
    assert copy_uids(answer, limit=3) == (38505, {304: 3956, 319: 3957, 320: 3958})
    assert copy_uids([b"* 3 EXPUNGE", b"A1 OK [COPYUID 7 9 2] Done"], limit=1) == (7, {9: 2})
    assert copy_uids([b"A1 OK Moved"], limit=1) is None


@pytest.mark.parametrize(
    "line",
    [
        b"* OK [COPYUID 1 1:4294967295 1:4294967295] every UID, for one asked",
        b"* OK [COPYUID 1 1:2 5] the sets do not pair up",
        b"* OK [COPYUID 0 1 5] UIDVALIDITY 0",
        b"* OK [COPYUID 1 * 5] a star",
        b"* OK [COPYUID 1 x 5] garbage",
        b"* OK [COPYUID 99999999999999999999 1 5] out of range",
        b"* OK [COPYUID 1 1] too few fields",
    ],
)
def test_a_copyuid_that_is_hostile_or_broken_is_ignored_never_expanded(line: bytes) -> None:
    assert copy_uids([line], limit=1) is None


def test_search_answer_cost_grows_linearly_and_gaps_make_ranges() -> None:
    def make(n: int) -> bytes:
        return b"* SEARCH " + b" ".join(b"%d" % (2 * i + 1) for i in range(n)) + b"\r\n"

    assert_linear(make, lambda line: search_ranges(line, []), 60_000)
    ranges: list[tuple[int, int]] = []
    search_ranges(b"* SEARCH 1 2 3 7 8\r\n", ranges)
    search_ranges(b'* ESEARCH (TAG "P3") UID ALL 10:4294967295\r\n', ranges)
    assert ranges == [(1, 3), (7, 8), (10, MAX_UID)]


def test_fetch_answer_parse_cost_grows_linearly() -> None:
    def make(n: int) -> bytes:
        flags = b" ".join(b"$kw%d" % i for i in range(n))
        body = b"x" * (20 * n)
        return b"* 1 FETCH (UID 5 FLAGS (%s) BODY[] {%d}\r\n%s)\r\n" % (flags, len(body), body)

    assert_linear(make, fetch_attrs, 60_000)
    attrs = fetch_attrs(make(3))
    assert attrs is not None and attrs["UID"] == 5 and attrs["BODY[]"] == b"x" * 60


def test_nesting_without_end_is_a_protocol_error_at_linear_cost() -> None:
    def make(n: int) -> bytes:
        return b"* 1 FETCH " + b"(" * n + b"\r\n"

    assert_linear(make, _deep, 200_000)


def _deep(data: bytes) -> None:
    with pytest.raises(ImapProtocolError):
        parse_items(data, 9)


@pytest.mark.parametrize(
    "line",
    [
        b'* 1 FETCH (UID 3 BODY[] "never closed\r\n',
        b"* 1 FETCH (UID 3 BODY[] {999}\r\nshort)\r\n",
        b"* 1 FETCH (UID 3 BODY[HEADER.FIELDS (A\r\n",
        b"* 1 FETCH (UID 99999999999 FLAGS ())\r\n",
    ],
)
def test_broken_fetch_answer_is_a_problem_for_its_uid_not_a_crash(line: bytes) -> None:
    attrs = fetch_attrs(line)
    if b"99999999999" in line:
        assert attrs is None  # no UID we could key a row by
    else:
        assert attrs is not None and attrs["UID"] == 3 and "PROBLEM" in attrs


def test_literal_declarations_are_read_as_bounded_numbers() -> None:
    assert literal_size(b"* 1 FETCH (BODY[] {99999999999}\r\n") == 99_999_999_999
    assert literal_size(b"* 1 FETCH (BODY[] {12}\r\n") == 12
    assert literal_size(b"* OK no literal here\r\n") is None
    with pytest.raises(ImapProtocolError):  # never int() of 5,000 digits
        literal_size(b"* 1 FETCH (BODY[] {" + b"9" * 5000 + b"}\r\n")

    def make(n: int) -> list[bytes]:
        return [b"* %d FETCH (BODY[] {%d}\r\n" % (i, 10**11 + i) for i in range(n)]

    assert_linear(make, lambda lines: [literal_size(x) for x in lines], 40_000)


def test_declared_100_mb_sizes_plan_header_fetches_at_linear_cost() -> None:
    cap = 50 * 1024 * 1024

    def make(n: int) -> tuple[list[int], list[int]]:
        sizes = [100 << 20 if i % 2 else 2000 for i in range(n)]
        return list(range(1, n + 1)), sizes

    assert_linear(make, lambda us: plan(us[0], us[1], cap), 50_000)
    batches = plan(*make(6), cap)
    assert [(b.uids, b.headers_only) for b in batches] == [
        ([1], False),
        ([2], True),
        ([3], False),
        ([4], True),
        ([5], False),
        ([6], True),
    ]
    assert [b.uids for b in plan([1, 2, 3, 4], [10, 10, 1 << 20, 10], cap)] == [[1, 2], [3], [4]]


def test_a_part_explosion_past_the_parser_cap_is_read_as_header_only_at_linear_cost() -> None:
    from services.imap.rows import MAX_MIME_PARTS, build

    account = Account(id=uuid.uuid4(), tenant_id=uuid.uuid4(), provider=Provider.imap, email="x")
    folder = Folder(id=uuid.uuid4(), tenant_id=account.tenant_id, name="INBOX")

    def make(n: int) -> dict[str, Any]:
        parts = b"--b\r\nContent-Type: a/b\r\n\r\nx\r\n" * n
        head = b"Subject: boom\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        return {"UID": 9, "BODY[]": head + parts + b"--b--\r\n"}

    def work(attrs: dict[str, Any]) -> None:
        values, atts, problem = build(
            account=account, folder=folder, uidvalidity=1, attrs=attrs, headers_only=False, cap=1
        )
        assert values["subject"] == "boom" and atts == [] and problem is not None
        assert problem.reason == "too_many_parts" and not values["too_large"]

    assert_linear(make, work, 2 * MAX_MIME_PARTS)


# -- the client's reader, against a scripted server --------------------------------------


async def _reader_cost(fake: FakeImap, answer: bytes) -> float:
    """Seconds until the client refuses `answer` to a UID FETCH (it must refuse it)."""
    fake.hook = lambda uid, items: answer
    start = time.perf_counter()
    client = await ImapClient(fake.config(timeout=5)).connect()
    await client.select("INBOX")
    with pytest.raises(ImapProtocolViolation):
        async for _ in client.uid_fetch("1", "UID BODY.PEEK[]"):
            pass
    await client.close()
    return time.perf_counter() - start


async def test_huge_literal_declaration_ends_the_connection_at_once() -> None:
    fake = await FakeImap({1: _message(1)}).start()
    try:
        costs = []
        for size in (99_999_999_999, 199_999_999_998):
            answer = b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % size
            costs.append(min([await _reader_cost(fake, answer) for _ in range(3)]))
    finally:
        await fake.stop()
    # Nothing of the literal is read or allocated: the declaration alone is refused.
    assert costs[0] < 0.5 and costs[1] < 0.5 and costs[1] <= RATIO * costs[0] + 0.01


async def test_over_long_line_is_refused_at_the_cap_not_read_to_the_end() -> None:
    fake = await FakeImap({1: _message(1)}).start()
    try:
        costs = []
        for mib in (4, 8):  # the cap is 1 MiB: both are cut there
            answer = b"* 1 FETCH (UID 1 FLAGS (" + b"x" * (mib << 20) + b"))\r\n"
            costs.append(min([await _reader_cost(fake, answer) for _ in range(2)]))
    finally:
        await fake.stop()
    assert costs[1] <= RATIO * costs[0] + 0.01, costs


# -- a whole sync against the scripted server --------------------------------------------


async def _account(db: Any) -> Account:
    tenant = await create_tenant(db)
    owner = await create_user(db, tenant)
    async with db.transaction() as s:
        account = Account(
            tenant_id=tenant.id,
            user_id=owner.id,
            provider=Provider.imap,
            email=f"h-{uuid.uuid4().hex[:6]}@example.com",
        )
        s.add(account)
    return account


async def _sync(db: Any, fake: FakeImap, account: Account, **config: Any) -> Any:
    async with ImapClient(fake.config(timeout=5, **config)) as client:
        return await sync_account(db, account=account, client=client)


async def _rows(db: Any, account: Account) -> dict[int, Message]:
    async with db.transaction() as s:
        rows = (
            await s.execute(sa.select(Message).where(Message.account_id == account.id))
        ).scalars()
        return {int(r.imap_uid or 0): r for r in rows}


async def _inbox(db: Any, account: Account) -> Folder:
    async with db.transaction() as s:
        stmt = sa.select(Folder).where(Folder.account_id == account.id, Folder.name == "INBOX")
        return (await s.execute(stmt)).scalar_one()


async def test_vanished_for_every_possible_uid_deletes_only_the_rows_we_hold(db: Any) -> None:
    fake = await FakeImap({u: _message(u) for u in range(1, 6)}).start()
    account = await _account(db)
    try:
        await _sync(db, fake, account)
        fake.modseq = 11  # something changed; the server says: all of 1:4294967295 vanished
        fake.vanished = b"1:4294967295"
        start = time.perf_counter()
        result = await _sync(db, fake, account)
        elapsed = time.perf_counter() - start
    finally:
        await fake.stop()
    assert result.deleted == 5 and elapsed < 2.0
    assert all(r.deleted_at is not None for r in (await _rows(db, account)).values())


async def test_declared_100_mb_message_is_stored_as_header_only_without_its_body(
    db: Any,
) -> None:
    messages = {u: _message(u) for u in range(1, 5)}
    fake = await FakeImap(messages).start()
    fake.declared[2] = 100 * 1024 * 1024
    fake.declared[3] = 10 * 1024**3  # 10 GB: past what message.size (32-bit) can hold
    account = await _account(db)
    try:
        result = await _sync(db, fake, account)
    finally:
        await fake.stop()
    assert result.new == 4
    rows = await _rows(db, account)
    assert not any(b"BODY.PEEK[]" in c and (b" 2 " in c or b" 3 " in c) for c in fake.commands)
    assert rows[2].too_large and rows[2].subject == "note 2" and rows[2].size == 100 << 20
    assert rows[2].text is None and "header" in (rows[2].problem or "")
    assert rows[3].too_large and rows[3].size is None and "10737418240" in (rows[3].problem or "")
    assert not any(rows[u].too_large or rows[u].problem for u in (1, 4))
    assert any(c.startswith(b"P") and b"UID FETCH 2 " in c for c in fake.fetched_with(b"[HEADER]"))


async def test_garbage_answer_for_one_uid_is_one_problem_and_the_folder_moves_on(
    db: Any,
) -> None:
    fake = await FakeImap({u: _message(u) for u in range(1, 8)}).start()
    fake.hook = lambda uid, items: (
        b'* 3 FETCH (UID 3 FLAGS () BODY[] "not closed\r\n' if uid == 3 and b"[]" in items else None
    )
    account = await _account(db)
    try:
        first = await _sync(db, fake, account)
        second = await _sync(db, fake, account)
    finally:
        await fake.stop()
    rows = await _rows(db, account)
    assert first.new == 7 and second.new == 0 and second.updated == 0
    assert rows[3].problem and "unreadable" in rows[3].problem and rows[3].text is None
    assert all(rows[u].text and rows[u].problem is None for u in (1, 2, 4, 5, 6, 7))
    assert (await _inbox(db, account)).uidnext == 8


async def test_literal_over_the_cap_for_one_uid_isolates_it_on_a_new_connection(
    db: Any,
) -> None:
    fake = await FakeImap({u: _message(u) for u in range(1, 6)}).start()
    fake.hook = lambda uid, items: (
        b"* 4 FETCH (UID 4 BODY[] {99999999999}\r\n" if uid == 4 and b"[]" in items else None
    )
    account = await _account(db)
    try:
        result = await _sync(db, fake, account, max_message_bytes=100_000)
    finally:
        await fake.stop()
    rows = await _rows(db, account)
    assert result.new == 5
    assert rows[4].problem and "protocol" in rows[4].problem
    assert all(rows[u].text and rows[u].problem is None for u in (1, 2, 3, 5))
    assert (await _inbox(db, account)).uidnext == 6
    logins = [c for c in fake.commands if b"LOGIN" in c.upper()]
    assert len(logins) == 3  # the first, one after the batch broke, one after UID 4 alone


async def test_hang_up_mid_fetch_is_transient_and_keeps_nothing_half_written(db: Any) -> None:
    fake = await FakeImap({u: _message(u) for u in range(1, 4)}).start()
    fake.hook = lambda uid, items: HANGUP if uid == 2 and b"[]" in items else None
    account = await _account(db)
    try:
        with pytest.raises(ProviderTemporaryError, match="closed the connection during UID FETCH"):
            await _sync(db, fake, account)
    finally:
        await fake.stop()
    assert await _rows(db, account) == {}


async def test_nul_bytes_in_headers_and_part_fields_are_stripped_not_fatal(db: Any) -> None:
    nul = (
        b"Subject: nul\x00here\r\nX-Odd: a\x00b\r\nMessage-ID: <nul@x>\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b'Content-Type: application/x\x00y; name="f\x00.bin"\r\nContent-ID: <c\x00d>\r\n\r\n'
        b"data\r\n--b--\r\n"
    )
    fake = await FakeImap({1: _message(1), 2: nul, 3: _message(3)}).start()
    account = await _account(db)
    try:
        result = await _sync(db, fake, account)
    finally:
        await fake.stop()
    rows = await _rows(db, account)
    assert result.new == 3 and all(r.problem is None for r in rows.values())
    assert rows[2].subject == "nulhere" and ["X-Odd", "ab"] in rows[2].headers
    async with db.transaction() as s:
        [(ctype, cid)] = (
            await s.execute(
                sa.select(Attachment.content_type, Attachment.content_id).where(
                    Attachment.message_id == rows[2].id
                )
            )
        ).all()
    assert (ctype, cid) == ("application/xy", "cd")


async def test_a_row_postgresql_refuses_is_kept_as_its_problem_and_the_batch_commits(
    db: Any,
) -> None:
    marker = f"refuse {uuid.uuid4().hex}"
    messages = {u: _message(u) for u in range(1, 6)}
    messages[3] = b"Subject: " + marker.encode() + b"\r\n\r\nbody\r\n"
    fake = await FakeImap(messages).start()
    account = await _account(db)
    # A real refusal by PostgreSQL for that one row (a trigger), whatever made it bad.
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    async with db.transaction() as s:
        await s.execute(
            sa.text(
                f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.subject = '{marker}' THEN RAISE EXCEPTION 'no' USING ERRCODE = '22000'; "
                f"END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        await s.execute(
            sa.text(
                f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON message "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        )
    try:
        first = await _sync(db, fake, account)
        second = await _sync(db, fake, account)
    finally:
        await fake.stop()
        async with db.transaction() as s:
            await s.execute(sa.text(f"DROP TRIGGER {name} ON message"))
            await s.execute(sa.text(f"DROP FUNCTION {name}()"))
    rows = await _rows(db, account)
    assert first.new == 5 and second.new == 0
    assert rows[3].problem and "could not be stored" in rows[3].problem and rows[3].subject is None
    assert all(rows[u].text and rows[u].problem is None for u in (1, 2, 4, 5))
    assert (await _inbox(db, account)).uidnext == 6


async def test_sizes_declared_small_then_sent_large_are_caught_by_the_batch_budget(
    db: Any,
) -> None:
    messages = {u: _message(u) for u in range(1, 6)}
    messages[2] = _message(2, body=b"z" * 1_500_000)  # under the cap, declared 1 KiB
    fake = await FakeImap(messages).start()
    fake.declared[2] = 1024
    account = await _account(db)
    try:
        result = await _sync(db, fake, account)
    finally:
        await fake.stop()
    rows = await _rows(db, account)
    # The batch of five broke its budget; fetched again one by one, each fits its own.
    assert result.new == 5 and all(r.problem is None for r in rows.values())
    assert rows[2].text is not None and len(rows[2].text) > 1_500_000
    assert len([c for c in fake.commands if b"LOGIN" in c.upper()]) == 2


async def test_garbage_lines_between_answers_are_ignored(db: Any) -> None:
    fake = await FakeImap({u: _message(u) for u in range(1, 5)}).start()
    garbage = b"\x00\xff not imap at all\r\n* 99 NONSENSE {3}\r\nabc\r\n+ go on\r\n* \r\n"
    fake.hook = lambda uid, items: (
        garbage + fake._normal(uid, uid, items) if uid == 2 and b"[]" in items else None
    )
    account = await _account(db)
    try:
        result = await _sync(db, fake, account)
    finally:
        await fake.stop()
    rows = await _rows(db, account)
    assert result.new == 4 and all(r.text and r.problem is None for r in rows.values())

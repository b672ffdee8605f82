"""`Replies`, the waiting requests of one multiplexed connection: ids in order, a reply reaches only the
waiter its id names (once), a late or foreign message reaches nobody, and the end of the connection
answers every waiter — also one added after the end — with None."""

from __future__ import annotations

import trio
import trio.testing

from aether_kv import Replies, Reply


async def test_a_reply_reaches_the_waiter_its_id_names_once() -> None:
    replies: Replies[Reply] = Replies()
    first, second = Reply(), Reply()
    first_id, second_id = replies.add(first), replies.add(second)
    assert (first_id, second_id) == (1, 2)
    assert replies.next_id() == 3  # a watch's id is never a request's
    assert replies.deliver({"id": second_id, "ok": "two"})
    assert await second.wait() == {"id": 2, "ok": "two"}
    assert not replies.deliver({"id": second_id, "ok": "again"})  # delivered already
    assert second.reply == {"id": 2, "ok": "two"}
    assert len(replies) == 1 and first.reply is None


async def test_messages_nobody_waits_for_are_dropped() -> None:
    replies: Replies[Reply] = Replies()
    waiter = Reply()
    request_id = replies.add(waiter)
    replies.discard(request_id)  # it gave up (a deadline)
    for message in ({"id": request_id, "ok": 1}, {"id": "1"}, {"id": True}, {"event": "exit"}, {"id": 99}):
        assert not replies.deliver(message)
    assert waiter.reply is None and len(replies) == 0


async def test_the_end_of_the_connection_answers_every_waiter_with_none() -> None:
    replies: Replies[Reply] = Replies()
    waiters = [Reply() for _ in range(3)]
    for waiter in waiters:
        replies.add(waiter)
    async with trio.open_nursery() as nursery:
        answers: list[object] = []

        async def wait(waiter: Reply) -> None:
            answers.append(await waiter.wait())

        for waiter in waiters:
            nursery.start_soon(wait, waiter)
        await trio.testing.wait_all_tasks_blocked()
        replies.end()
    assert answers == [None, None, None] and replies.ended and len(replies) == 0
    late = Reply()
    replies.add(late)  # after the end: answered at once, nothing waits forever
    with trio.fail_after(1):
        assert await late.wait() is None
    assert not replies.deliver({"id": 4, "ok": "too late"})


async def test_pending_lists_the_waiters_and_tolerates_discards_while_listing() -> None:
    replies: Replies[Reply] = Replies()
    ids = [replies.add(Reply()) for _ in range(4)]
    for request_id, _waiter in replies.pending():
        if request_id % 2:
            replies.discard(request_id)
    assert [request_id for request_id, _ in replies.pending()] == [i for i in ids if not i % 2]

"""Records hold text: a lone UTF-16 surrogate in a string a slice gave (a failure message, an entry point
name: the slice protocol passes them through) is stored as its escape in words. Stored as the character,
it came back as one that no UTF-8 encoder takes, and every read that answered the record (the events, a
slice's status, the dashboard) failed with a 500. A record stored so before is read the same way."""

from __future__ import annotations

import json

from aether_node.core._records import EndpointRecord, SliceRecord, SliceState, decode_record, encode_record


def answerable(value: object) -> bool:
    """Whether `value` can go out as a JSON answer (starlette's: ensure_ascii off, then UTF-8)."""
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return True


def test_a_failure_message_with_a_lone_surrogate_is_stored_as_text() -> None:
    record = SliceRecord(state=SliceState.FAILED, reason="load: the slice failed (raised): bad \udcff byte")
    stored = decode_record("slices/n1/a:b:1/1", encode_record(record), SliceRecord)
    assert stored.reason == "load: the slice failed (raised): bad \\udcff byte"
    assert answerable(stored.reason)


def test_entry_point_names_and_emoji_stay_as_they_are_and_lone_surrogates_become_escapes() -> None:
    record = EndpointRecord(node_id="n1", instance=1, entries=("grin\U0001f600", "odd\ud800", "café"))
    stored = decode_record("endpoints/a:b:1/1", encode_record(record), EndpointRecord)
    assert stored.entries == ("grin\U0001f600", "odd\\ud800", "café")
    assert answerable(list(stored.entries))


def test_a_record_stored_with_a_lone_surrogate_before_is_read_as_text() -> None:
    before = b'{"state":"FAILED","reason":"bad \\udcff byte","schema_version":1}'
    stored = decode_record("slices/n1/a:b:1/1", before, SliceRecord)
    assert stored.reason == "bad \\udcff byte" and answerable(stored.reason)

"""The wire format against Celery's captured traffic, and decoding that never escapes."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.utils.json import dumps

from taskq import MalformedMessage, Taskq
from taskq.message import JSON, TaskMessage, decode_body, parse, to_body, to_headers

# Traffic of a real Celery 5.7 client (tests/data/celery-captures/README.md says how it was taken).
CAPTURES = Path(__file__).resolve().parents[1] / "data" / "celery-captures"
ACCEPT = frozenset({JSON})


def capture(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((CAPTURES / name).read_text())


def test_headers_and_body_match_a_celery_capture() -> None:
    captured = capture("example_link.json")
    h = captured["headers"]
    app = Taskq("t", broker="memory://")

    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    msg = TaskMessage(
        id=h["id"],
        task="tasks.add",
        args=(2, 3),
        kwargs={},
        eta=datetime.fromisoformat(h["eta"]),
        root_id=h["root_id"],
        origin=h["origin"],
        ignore_result=False,
        callbacks=(mul.s(10).as_dict(),),
    )
    headers = to_headers(msg)
    assert list(headers) == list(h)  # same keys, same order
    assert headers == h
    body = json.loads(base64.b64decode(captured["body"]))
    assert json.loads(dumps(to_body(msg))) == body


def test_signatures_serialize_like_celery() -> None:
    app = Taskq("t", broker="memory://")

    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    body = capture("example_link_body.json")
    assert mul.s(10).as_dict() == body[2]["callbacks"][0]


def test_parse_a_captured_celery_message() -> None:
    captured = capture("example_chain.json")
    body = base64.b64decode(captured["body"])
    msg = parse(captured["headers"], decode_body(body, JSON, "utf-8", ACCEPT))
    assert msg.task == captured["headers"]["task"]
    assert msg.id == captured["headers"]["id"]
    assert msg.args == (2, 3)
    assert msg.eta is not None and msg.eta.tzinfo is not None
    assert len(msg.chain) == 1 and msg.chain[0]["task"] == "tasks.mul"


def test_parse_protocol_1() -> None:
    body = {
        "task": "tasks.add",
        "id": "abc",
        "args": [1, 2],
        "kwargs": {"z": 1},
        "eta": "2030-01-01T00:00:00",
        "expires": None,
        "utc": True,
        "retries": 2,
        "callbacks": None,
        "errbacks": None,
        "timelimit": [10, 5],
        "taskset": "g1",
        "chord": None,
    }
    msg = parse({}, body)
    assert (msg.task, msg.id, msg.args, dict(msg.kwargs)) == ("tasks.add", "abc", (1, 2), {"z": 1})
    assert msg.eta == datetime(2030, 1, 1, tzinfo=UTC)  # naive means UTC
    assert (msg.retries, msg.time_limit, msg.soft_time_limit, msg.group) == (2, 10.0, 5.0, "g1")


def test_parse_hybrid_headers_with_v1_body() -> None:
    msg = parse({"task": "tasks.add", "id": "h1"}, {"args": [1], "kwargs": {}})
    assert msg.args == (1,)


def test_minimum_message_headers_task_and_id_only() -> None:
    msg = parse({"task": "t.x", "id": "1"}, [[], {}, {}])
    assert (msg.root_id, msg.retries, msg.callbacks) == (None, 0, ())


@pytest.mark.parametrize(
    ("headers", "body", "reason", "recovered"),
    [
        ({}, [[], {}, {}], "no 'task' header", None),
        ({"task": "t.x"}, [[], {}, {}], "task id", None),
        ({"id": "i1", "task": 5}, [[], {}, {}], "task name", "i1"),
        ({"task": "t.x", "id": "i2"}, [[], {}], "3-element", "i2"),
        ({"task": "t.x", "id": "i3"}, {"x": 1}, "3-element", "i3"),
        ({"task": "t.x", "id": "i4"}, ["a", {}, {}], "args must be an array", "i4"),
        ({"task": "t.x", "id": "i5"}, [[], [], {}], "kwargs", "i5"),
        ({"task": "t.x", "id": "i6"}, [[], {}, []], "embed", "i6"),
        ({"task": "t.x", "id": "i7", "eta": "tomorrow"}, [[], {}, {}], "eta", "i7"),
        ({"task": "t.x", "id": "i8", "retries": "1"}, [[], {}, {}], "retries", "i8"),
        ({"task": "t.x", "id": "i9", "timelimit": [1]}, [[], {}, {}], "timelimit", "i9"),
        ({"task": "t.x", "id": "i10"}, [[], {}, {"callbacks": "x"}], "callbacks", "i10"),
    ],
)
def test_malformed_messages_say_why_and_recover_the_id(
    headers: dict,
    body: object,
    reason: str,
    recovered: str | None,  # type: ignore[type-arg]
) -> None:
    with pytest.raises(MalformedMessage, match=reason) as info:
        parse(headers, body)
    assert info.value.task_id == recovered


@pytest.mark.parametrize(
    ("raw", "content_type", "reason"),
    [
        (b"{not json", JSON, "not valid"),
        (b"\xff\xfe\x00", JSON, "not valid"),
        (b"\x80\x04K\x01.", "application/x-python-serialize", "not accepted"),
        (b"x: 1", "application/x-yaml", "not accepted"),
        (b"[]", None, "no content type"),
    ],
)
def test_body_decoding_refuses_before_decoding(
    raw: bytes, content_type: str | None, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_body(raw, content_type, "utf-8", ACCEPT)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "task",
                "id",
                "eta",
                "expires",
                "retries",
                "timelimit",
                "group_index",
                "root_id",
                "ignore_result",
                "stamps",
                "stamped_headers",
                "x",
            ]
        ),
        json_values,
        max_size=8,
    ),
    body=json_values,
)
def test_parse_raises_only_malformed_message(headers: dict, body: object) -> None:  # type: ignore[type-arg]
    with contextlib.suppress(MalformedMessage):
        parse(headers, body)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode),
    content_type=st.sampled_from([JSON, "application/x-python-serialize", "text/plain", ""]),
)
def test_decode_raises_only_malformed_message(raw: bytes, content_type: str) -> None:
    with contextlib.suppress(MalformedMessage):
        decode_body(raw, content_type, "utf-8", ACCEPT)


def test_new_ids_are_random_version_4_uuids_in_their_usual_text_form() -> None:
    import uuid

    from taskq.message import new_id

    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_typed_values_are_revived_however_their_key_is_spelled() -> None:
    when = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)
    text = dumps([[when], {}, {}])
    assert '"__type__"' in text  # kombu's spelling of a typed value
    escaped = text.replace('"__type__"', '"\\u005f_type__"')  # the same key, as JSON reads it
    for form in (text, text.encode(), memoryview(escaped.encode()), escaped):
        assert decode_body(form, JSON, "utf-8", ACCEPT) == [[when], {}, {}]
    # Text with neither spelling is read as it stands, underscores and backslashes too.
    plain = [["x" * 100_000, "a_b\\n"], {"type_": 1}, {}]
    assert decode_body(json.dumps(plain).encode(), JSON, "utf-8", ACCEPT) == plain


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_a_body_nested_too_deeply_is_malformed_not_an_escape(depth: int) -> None:
    body = b"[" + b"[" * depth + b"]" * depth + b", {}, {}]"
    with pytest.raises(MalformedMessage, match="nested too deeply"):
        decode_body(body, JSON, "utf-8", ACCEPT)
    escaped = body.replace(b"{}, {}", b'{}, {"k": "\\u00e9"}')  # kombu's decoder, not json's
    with pytest.raises(MalformedMessage, match="nested too deeply"):
        decode_body(escaped, JSON, "utf-8", ACCEPT)

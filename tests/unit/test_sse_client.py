"""The upstream event-stream parser: the same events however the bytes are cut."""

from __future__ import annotations

import random

from kathan.backends.sse_client import SSEParser

STREAM = (
    b": keep-alive\r\n"
    b"event: message_start\r\ndata: {\"a\": 1}\r\n\r\n"
    b"data: first line\ndata: second line\n\n"
    b"data: caf\xc3\xa9 \xe0\xa4\xa8\n\n"
    b"event: ping\n\n"  # an event without data is not dispatched
    b"data: [DONE]\n\n"
    b"data: no blank line at the end"
)
EVENTS = [
    ("message_start", '{"a": 1}'),
    (None, "first line\nsecond line"),
    (None, "café न"),
    (None, "[DONE]"),
    (None, "no blank line at the end"),
]


def parse(pieces: list[bytes]) -> list[tuple[str | None, str]]:
    parser = SSEParser()
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.end()


def test_whole_stream() -> None:
    assert parse([STREAM]) == EVENTS


def test_every_cut_in_two_and_random_cuts_give_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        assert parse([STREAM[:cut], STREAM[cut:]]) == EVENTS, cut
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), 6))
        pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        assert parse(pieces) == EVENTS
    assert parse([bytes([b]) for b in STREAM]) == EVENTS

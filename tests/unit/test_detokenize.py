"""Token pieces to text: the exact bytes a model samples, cut where a cut can fall."""

from __future__ import annotations

import pytest

from kathan.engine.detokenize import Detokenizer


def run(pieces: list[bytes], stops: tuple[str, ...] = ()) -> tuple[list[str], bool]:
    """Each piece's text as the runner sends it, the last one ended by ``end()``
    unless a stop came first."""
    detok = Detokenizer(stops)
    out = []
    for piece in pieces:
        text, stopped = detok.feed(piece)
        out.append(text)
        if stopped:
            return out, True
    out[-1] += detok.end()
    return out, False


def test_a_character_split_across_pieces_is_sent_whole() -> None:
    euro = "€".encode()  # three bytes
    assert run([b"5 ", euro[:1], euro[1:2], euro[2:] + b"!"]) == (["5 ", "", "", "€!"], False)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"caf", "é".encode()[:1]],  # max_tokens fell after the first byte of a 2-byte character
        [b"ok ", "€".encode()[:2]],  # after two of three
        [b"hi ", "🙂".encode()[:3]],  # after three of four
        [b"hi ", "🙂".encode()[:1], "🙂".encode()[1:3]],  # over several pieces
    ],
)
def test_an_unfinished_character_at_the_end_is_dropped_not_replaced(pieces: list[bytes]) -> None:
    out, stopped = run(pieces)
    assert not stopped
    text = "".join(out)
    assert "\ufffd" not in text
    assert text == b"".join(pieces).decode("utf-8", errors="ignore")


def test_text_held_for_a_stop_is_released_and_the_unfinished_character_dropped() -> None:
    # "E" might have started "END"; the reply was cut inside the next character.
    assert run([b"x E", "ö".encode()[:1]], ("END",)) == (["x ", "E"], False)


def test_a_stop_in_the_piece_that_starts_a_character_drops_the_character() -> None:
    # The piece holds the stop and then the first byte of a character: the choice
    # ends at the stop, and the byte after it is never seen.
    assert run([b"a", b"EN", b"D\xc3"], ("END",)) == (["a", "", ""], True)


def test_a_character_the_model_abandoned_mid_way_is_replaced_where_it_stands() -> None:
    # Not a cut: the model wrote a lead byte and then ASCII, which is not UTF-8.
    assert run([b"a", b"\xc3", b"b"]) == (["a", "", "\ufffdb"], False)


def test_bytes_that_are_never_utf8_are_replaced_where_they_stand() -> None:
    assert run([b"a\xffb", b"c"]) == (["a\ufffdb", "c"], False)

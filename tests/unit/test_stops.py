from kathan.engine.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_no_stops_passes_text_through() -> None:
    assert run([], ["a", "b"]) == ("ab", False)


def test_stop_inside_one_piece_cuts_before_it() -> None:
    assert run(["END"], ["hello END world"]) == ("hello ", True)


def test_stop_spanning_pieces_is_never_emitted_in_part() -> None:
    matcher = StopMatcher(["<stop>"])
    assert matcher.feed("abc <st") == ("abc ", False)
    assert matcher.feed("op> tail") == ("", True)


def test_held_text_is_released_when_it_stops_matching() -> None:
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("line\n") == ("line", False)
    assert matcher.feed("next") == ("\nnext", False)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["world", "lo"], ["hello world"]) == ("hel", True)


def test_flush_returns_the_partial_match_at_the_end() -> None:
    assert run(["STOP"], ["the end ST"]) == ("the end ST", False)


def test_single_character_pieces() -> None:
    text = "one, two! three"
    assert run(["!"], list(text)) == ("one, two", True)


def test_overlapping_prefixes() -> None:
    # "aab" only matches after backing off from the first "a".
    assert run(["aab"], ["a", "a", "a", "b", "c"]) == ("a", True)

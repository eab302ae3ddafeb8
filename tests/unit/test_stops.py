from kathan.backends.toolcalls import ToolUse, markup_stops
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


# SmolLM2's tokens for the start of a fake tool result after a real one, which the
# model writes under tool_choice "none" (seen through the SDK at temperature 0.7).
FAKE_RESULT = ["<", "tool", "_", "response", ">", "\n", '{"', "name", '":', ' "', "get"]
CHATML = ["<|im_start|>", "<|im_end|>"]


def test_a_fake_tool_result_ends_the_reply_before_its_tag() -> None:
    stops = markup_stops(CHATML, None)
    assert run(stops, FAKE_RESULT) == ("", True)
    assert run(stops, ["It", " is", " 22", "C", ".", "\n", *FAKE_RESULT]) == ("It is 22C.\n", True)


def test_a_turn_marker_written_as_text_ends_the_reply() -> None:
    assert run(markup_stops(CHATML, None), ["Bye", ".", "<", "|", "im", "_", "start", "|>"]) == (
        "Bye.", True)


def test_call_tags_pass_where_calls_are_parsed() -> None:
    use = ToolUse((), "auto", parallel=True, field="tools")
    call = ["<", "tool", "_", "call", ">", "\n", '{"', "name", '":', ' "f"', "}", "</", "tool",
            "_", "call", ">"]
    assert run(markup_stops(CHATML, use), call) == ("".join(call), False)
    assert run(markup_stops(CHATML, None), call) == ("", True)


def test_the_matcher_says_which_stop_string_ended_the_text() -> None:
    m = StopMatcher(["END", "STOP"])
    assert m.matched is None
    assert m.feed("one ST") == ("one ", False) and m.matched is None
    assert m.feed("OP, END") == ("", True)
    assert m.matched == "STOP"  # the earliest in the text, not the first listed

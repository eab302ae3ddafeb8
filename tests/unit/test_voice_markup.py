"""ThinkFilter, FenceFilter and strip_inline."""

from __future__ import annotations

import random

import pytest

from kathan.voice.markup import FenceFilter, ThinkFilter, strip_inline
from kathan.voice.shaper import SpeechShaper, shape_text


def run_filter(make: type[ThinkFilter | FenceFilter], text: str, cuts: list[int]) -> str:
    f = make()
    out = []
    prev = 0
    for cut in cuts:
        out.append(f.feed(text[prev:cut]))
        prev = cut
    out.append(f.feed(text[prev:]))
    out.append(f.flush())
    return "".join(out)


def all_splits(text: str) -> list[list[int]]:
    rng = random.Random(11)
    splits = [[i] for i in range(len(text) + 1)] + [list(range(1, len(text)))]
    for _ in range(50):
        splits.append(sorted(rng.sample(range(len(text) + 1), rng.randint(2, len(text) // 2))))
    return splits


# --- ThinkFilter ------------------------------------------------------------------------

THINK_CASES = [
    ("Hi.<think>plan</think> Done.", "Hi. Done."),
    ("<THINKING>\nplan\n</Thinking>\nAnswer.", "\nAnswer."),
    ("A <reasoning >x < y</reasoning> B", "A  B"),
    ("Before <think>never closed. ends here", "Before "),
    ("stray</think> close and a < b <thinker> <th", "stray close and a < b <thinker> <th"),
    ("<think>a</think><think>b</think>c", "c"),
    ("x <think>mixed</reasoning> y", "x  y"),
    ("Use the `<think>` tag. <think>hid `</think>` den</think>ok", "Use the `<think>` tag. ok"),
]


@pytest.mark.parametrize(("text", "expected"), THINK_CASES)
def test_think_filter(text: str, expected: str) -> None:
    for cuts in all_splits(text):
        assert run_filter(ThinkFilter, text, cuts) == expected, cuts


def test_think_filter_holds_back_partial_tags() -> None:
    f = ThinkFilter()
    assert f.feed("Hello <") == "Hello "
    assert f.feed("thi") == ""
    assert f.feed("s is text") == "<this is text"
    assert f.feed(" <think") == " "
    assert f.feed("ing  ") == ""
    assert f.feed(">secret</th") == ""
    assert f.feed("inking> out") == " out"
    assert f.feed(" <") == " "
    assert f.flush() == "<"


def test_think_filter_unclosed_block_drops_to_the_end() -> None:
    f = ThinkFilter()
    assert f.feed("ok <think>a long chain") == "ok "
    assert f.feed(" of thought </thi") == ""
    assert f.flush() == ""
    assert f.feed("new stream") == "new stream"  # flush resets


# --- FenceFilter ------------------------------------------------------------------------

FENCE_CASES = [
    ("Run:\n```python\nprint(1)\n```\nDone.", "Run:\nDone."),
    ("Run:\n~~~\nls ~\n~~~\nDone.", "Run:\nDone."),
    ("A\n````md\n```\nnested\n```\n````\nB", "A\nB"),
    ("A\n```\ncode\n``` not a close\n```\nB\n", "A\nB\n"),
    ("A\n  ```js\n  x()\n  ```\nB", "A\nB"),
    ("A\n```\nnever closed\nmore", "A\n"),
    ("A\n```inline``` is code\nB", "A\n```inline``` is code\nB"),
    ("Use `` or ~~ here\n``\nx", "Use `` or ~~ here\n``\nx"),
    ("mid ``` line\nok", "mid ``` line\nok"),
    ("end\n```", "end\n"),
    ("end\n``", "end\n``"),
]


@pytest.mark.parametrize(("text", "expected"), FENCE_CASES)
def test_fence_filter(text: str, expected: str) -> None:
    for cuts in all_splits(text):
        assert run_filter(FenceFilter, text, cuts) == expected, cuts


def test_fence_filter_holds_back_partial_fences() -> None:
    f = FenceFilter()
    assert f.feed("Intro\n`") == "Intro\n"
    assert f.feed("`") == ""
    assert f.feed("`py\nsecret()\n`") == ""
    assert f.feed("``\nOut `x`") == "Out `x`"
    assert f.feed("\n`y` too") == "\n`y` too"
    assert f.flush() == ""


# --- strip_inline -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**bold** and __strong__ and *em* and _em_", "bold and strong and em and em"),
        ("***both*** and ~~gone~~ text", "both and gone text"),
        ("snake_case_name and john_doe@example.com", "snake_case_name and john_doe@example.com"),
        ("2 * 3 = 6 and a_b", "2 * 3 = 6 and a_b"),
        ("Run `pip install pancake_mix` now", "Run pip install pancake_mix now"),
        ("Use ``a `tick` here``", "Use a `tick` here"),
        ('See [the docs](https://x.org/a_b "title") and ![a cat](c.png)', "See the docs and a cat"),
        ("Ref [text][1] and note[^2]", "Ref text and note"),
        ("Go to <https://example.com/path> or <mailto:a@b.org>",
         "Go to https://example.com/path or a@b.org"),
        ("Line<br>break and <b>bold</b> <span class=\"x\">span</span>", "Line break and bold span"),
        ("Tom &amp; Jerry <!-- hidden -->here", "Tom & Jerry here"),
        ("\\*not em\\* and \\_x\\_", "*not em* and _x_"),
        ("# Title", "Title"),
        ("### Title ###", "Title"),
        ("> quoted **text**", "quoted text"),
        ("> > - nested quote item", "nested quote item"),
        ("- [x] done task", "done task"),
        ("#hashtag stays", "#hashtag stays"),
        ("-5 degrees", "-5 degrees"),
        ("**Note.", "Note."),
        ("This** is it", "This is it"),
        ("_private and trailing_ markers", "private and trailing markers"),
    ],
)
def test_strip_inline_markdown(text: str, expected: str) -> None:
    assert strip_inline(text, "en-US") == expected


def test_strip_inline_lines_become_sentences() -> None:
    text = "## Ingredients\n- flour\n* sugar,\n+ milk!\n1. eggs\n2) butter\n\n---\nServe warm"
    expected = "Ingredients. flour. sugar, milk! eggs. butter. Serve warm"
    assert strip_inline(text, "en-US") == expected
    assert strip_inline("Title\n", "en-US") == "Title."
    assert strip_inline("शीर्षक\n- पहला\n- दूसरा।", "hi-IN") == "शीर्षक। पहला। दूसरा।"
    assert strip_inline("**Done.**\nNext", "en-US") == "Done. Next"


def test_strip_inline_tables() -> None:
    text = "| Name | Price |\n|:---|---:|\n| Tea | $2.50 |\n"
    assert strip_inline(text, "en-US") == "Name, Price. Tea, $2.50."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Great job 🎉!", "Great job!"),
        ("Party 🎉🎊 time", "Party time"),
        ("Family 👨‍👩‍👧‍👦 and runner 🏃🏽‍♀️ done", "Family and runner done"),
        ("Flags 🇮🇳 🇲🇽 🏴󠁧󠁢󠁳󠁣󠁴󠁿 here", "Flags here"),
        ("Keycap 1️⃣ 2️⃣ #️⃣ and heart ❤️ ok", "Keycap and heart ok"),
        ("Text ☀️ sun ✅ check ⭐ star", "Text sun check star"),
        ("Smile 😀.", "Smile."),
        ("🚀🚀", ""),
        ("- 🎉\n- real item", "real item"),
    ],
)
def test_strip_inline_emoji(text: str, expected: str) -> None:
    assert strip_inline(text, "en-US") == expected


@pytest.mark.parametrize(
    ("text", "locale", "expected"),
    [
        ("नमस्ते! आज **मौसम** अच्छा है।", "hi-IN", "नमस्ते! आज मौसम अच्छा है।"),
        ("क्‍या हाल है 🙏", "hi-IN", "क्‍या हाल है"),  # the ZWJ inside the word stays
        ("¿Qué tal? ¡Muy _bien_! Señor Núñez", "es-MX", "¿Qué tal? ¡Muy bien! Señor Núñez"),
        ("Très **bien** ! Ça va ?", "fr-FR", "Très bien ! Ça va ?"),
        ("Ça va ?", "en-US", "Ça va?"),
        ("Café — crème brûlée…", "fr-FR", "Café — crème brûlée…"),
    ],
)
def test_strip_inline_keeps_non_latin_text(text: str, locale: str, expected: str) -> None:
    assert strip_inline(text, locale) == expected


def test_strip_inline_collapses_whitespace() -> None:
    assert strip_inline("  a \t b  \n\n  c  ", "en-US") == "a b. c"


# --- markdown around URLs with paths, currency signs and scores, through the shaper ------

SHAPED = [
    ("en-US", "**See example.com/pricing/my_plans** for `3:2` odds at *¥500*.",
     "See example.com/pricing/my_plans for 3:2 odds at ¥500.",
     ("See example dot com slash pricing slash my underscore plans for three to two odds at "
     "five hundred yen.")),
    ("en-GB", "Visit _example.co.uk/pricing/plans_ for *₩1,000*.",
     "Visit example.co.uk/pricing/plans for ₩1,000.",
     "Visit example dot co dot uk slash pricing slash plans for one thousand won."),
    ("en-IN", "Check **example.in/plans** for ₹500, India won *three:two*.",
     "Check example.in/plans for ₹500, India won three:two.",
     "Check example dot in slash plans for five hundred rupees, India won three to two."),
    ("hi-IN", "**example.com/pricing/plans** देखें। स्कोर *3:2* रहा, कीमत ₹500।",
     "example.com/pricing/plans देखें। स्कोर 3:2 रहा, कीमत ₹500।",
     "example डॉट com स्लैश pricing स्लैश plans देखें। स्कोर तीन से दो रहा, कीमत पाँच सौ रुपये।"),
    ("es-MX", "Mira **example.com/precios/planes**: quedaron *tres:dos* y costó ₱150.",
     "Mira example.com/precios/planes: quedaron tres:dos y costó ₱150.",
     ("Mira example punto com diagonal precios diagonal planes: quedaron tres a dos y costó "
     "ciento cincuenta pesos filipinos.")),
    ("fr-FR", "Voir **example.com/tarifs/offres** : score *3:2*, prix 5 ₺.",
     "Voir example.com/tarifs/offres : score 3:2, prix 5 ₺.",
     ("Voir example point com slash tarifs slash offres : score trois à deux, prix cinq "
     "livres turques.")),
]


@pytest.mark.parametrize(("locale", "text", "stripped", "spoken"), SHAPED)
def test_markup_around_urls_signs_and_scores(
    locale: str, text: str, stripped: str, spoken: str
) -> None:
    """strip_inline leaves the patterns whole for normalize; the shaper speaks them, fed
    in any split."""
    assert strip_inline(text, locale) == stripped
    assert shape_text(text, locale) == spoken
    rng = random.Random(locale)
    for _ in range(20):
        shaper = SpeechShaper(locale)
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        pieces = [p for part in parts for p in shaper.feed(part)] + shaper.flush()
        assert " ".join(pieces) == spoken, parts

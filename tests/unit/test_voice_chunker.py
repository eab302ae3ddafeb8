"""SentenceChunker and SpeechShaper: golden replies per locale, split invariance, rules."""

from __future__ import annotations

import random

import pytest

from kathan.voice.chunker import Piece, SentenceChunker
from kathan.voice.markup import FenceFilter, ThinkFilter
from kathan.voice.shaper import SpeechShaper, shape_text


def identity(text: str, locale: str) -> str:
    return text


def split_feed(stage: SpeechShaper | SentenceChunker, text: str,
               cuts: list[int] | None) -> list[str]:
    """Feed `text` to `stage` split at the positions `cuts`; return every piece."""
    out: list[str] = []
    prev = 0
    for cut in cuts or []:
        out += stage.feed(text[prev:cut])
        prev = cut
    out += stage.feed(text[prev:])
    return out + stage.flush()


def shape(text: str, locale: str, cuts: list[int] | None = None) -> list[str]:
    return split_feed(SpeechShaper(locale, identity), text, cuts)


def reply(*lines: str) -> str:
    return "\n".join(lines)


def chunk(text: str, locale: str = "en-US", cuts: list[int] | None = None, **kw: int) -> list[str]:
    return split_feed(SentenceChunker(locale, **kw), text, cuts)


# --- golden replies ---------------------------------------------------------------------

EN_US = reply(
    "<think>",
    "The user wants a pancake recipe. I'll keep it short.",
    "</think>",
    "Sure, here's a quick pancake recipe you can make in about 20 minutes! 🥞",
    "",
    "## Ingredients",
    "- **1.5 cups** flour",
    "- 2 tbsp sugar",
    "- 1 cup milk",
    "",
    "## Steps",
    "1. Mix the dry ingredients, e.g. flour and sugar.",
    "2. Whisk in the milk until smooth.",
    "3. Cook on a hot pan at approx. 375 degrees. **Pro tip. Flip once** when bubbles form.",
    "",
    "```python",
    'print("not spoken")',
    "```",
    "![A stack of pancakes](https://example.com/stack.png)",
    ("Dr. Smith's team tested it on March 15, 2024 at 3:30 p.m. and it cost $1,250.50 for the"
     " whole event. Is it worth it? Well... maybe. Install `pancake_mix` from"
     " <https://example.com/faq>, or call (555) 123-4567. 1️⃣ Questions? Email"
     " john.doe@example.com or visit [our site](https://example.com/pancakes). Enjoy! 😊"),
    "",
)
EN_US_PIECES = [
    "Sure, here's a quick pancake recipe you can make in about 20 minutes!",
    "Ingredients. 1.5 cups flour.",
    "2 tbsp sugar. 1 cup milk.",
    "Steps. Mix the dry ingredients, e.g. flour and sugar.",
    "Whisk in the milk until smooth.",
    "Cook on a hot pan at approx. 375 degrees.",
    "Pro tip. Flip once when bubbles form.",
    "A stack of pancakes.",
    ("Dr. Smith's team tested it on March 15, 2024 at 3:30 p.m. and it cost $1,250.50 for the"
     " whole event."),
    "Is it worth it? Well... maybe.",
    "Install pancake_mix from https://example.com/faq, or call (555) 123-4567.",
    "Questions? Email john.doe@example.com or visit our site.",
    "Enjoy!",
]

EN_GB = reply(
    ("Good question, Mr Patel — the quickest route from King's Cross to Heathrow is the"
     " Piccadilly line, which takes roughly 50 minutes and costs £5.60 with an Oyster card."),
    "",
    "> **Tip:** off-peak fares apply after 9:30 a.m. on weekdays.",
    "",
    "| Option | Time | Cost |",
    "|---|---|---|",
    "| Tube | 50 min | £5.60 |",
    "| Heathrow Express | 15 min | £25.00 |",
    "",
    ("The U.K. Border Force queue can be long, so allow an extra hour. J. K. Rowling fans can"
     " stop at Platform 9¾ first 🧙‍♂️! Call 020 7946 0958 or see https://tfl.gov.uk/ for"
     " updates. Safe travels 🇬🇧"),
)
EN_GB_PIECES = [
    "Good question,",
    ("Mr Patel — the quickest route from King's Cross to Heathrow is the Piccadilly line, which"
     " takes roughly 50 minutes and costs £5.60 with an Oyster card."),
    "Tip: off-peak fares apply after 9:30 a.m. on weekdays.",
    "Option, Time, Cost.",
    "Tube, 50 min, £5.60.",
    "Heathrow Express, 15 min, £25.00.",
    "The U.K. Border Force queue can be long, so allow an extra hour.",
    "J. K. Rowling fans can stop at Platform 9¾ first!",
    "Call 020 7946 0958 or see https://tfl.gov.uk/ for updates.",
    "Safe travels",
]

EN_IN = reply(
    ("Namaste ji the Deccan Queen is the most popular morning train between Mumbai and Pune for"
     " office goers and students alike because it is fast."),
    ("The fare is approximately Rs. 1,250 in the chair car and the train leaves at 7:15 a.m."
     " from CSMT."),
    "<reasoning>Check the IRCTC fare table.</reasoning>",
    "**Booking:** use irctc.co.in or call 139 👍",
    "Smt. Iyer, the station manager, says No. 12123 runs daily. Carry ID etc. Happy journey! 🚆",
    "",
)
EN_IN_PIECES = [
    # No break in the first 15 words: the first piece is cut between two plain words.
    "Namaste ji the Deccan Queen is the most popular morning train between Mumbai and Pune",
    "for office goers and students alike because it is fast.",
    ("The fare is approximately Rs. 1,250 in the chair car and the train leaves at 7:15 a.m."
     " from CSMT."),
    "Booking: use irctc.co.in or call 139.",
    "Smt. Iyer, the station manager, says No. 12123 runs daily.",
    "Carry ID etc. Happy journey!",
]

HI_IN = reply(
    "<think>उपयोगकर्ता दिल्ली के मौसम के बारे में पूछ रहा है।</think>",
    "नमस्ते! आज दिल्ली में तापमान लगभग 32.5 डिग्री रहेगा। 🌞",
    "शाम 6:30 बजे हल्की बारिश हो सकती है, इसलिए छाता साथ रखें।",
    "- **सुबह:** धूप",
    "- **दोपहर:** बादल",
    ("अधिक जानकारी के लिए डॉ. शर्मा से 98765 43210 पर संपर्क करें या mausam@example.in पर"
     " ईमेल भेजें। धन्यवाद॥"),
)
HI_IN_PIECES = [
    "नमस्ते!",
    "आज दिल्ली में तापमान लगभग 32.5 डिग्री रहेगा।",
    "शाम 6:30 बजे हल्की बारिश हो सकती है, इसलिए छाता साथ रखें।",
    "सुबह: धूप। दोपहर: बादल।",
    ("अधिक जानकारी के लिए डॉ. शर्मा से 98765 43210 पर संपर्क करें या mausam@example.in पर"
     " ईमेल भेजें।"),
    "धन्यवाद॥",
]

ES_MX = reply(
    ("¡Claro! 😄 El vuelo de la Ciudad de México a Cancún cuesta aprox. $2,499.99 MXN y sale a"
     " las 3:30 p.m. del 15 de marzo de 2024."),
    "",
    ("¿Quieres que te ayude con el hotel? El Sr. López, de la agencia, puede darte una"
     " cotización; llámalo al 55 1234 5678 o escribe a reservas@viajes.mx."),
    "~~~bash",
    "curl https://api.viajes.mx/vuelos",
    "~~~",
    "*Nota:* los precios incluyen IVA, etc. Buen viaje... ¡Disfrútalo!",
    "",
)
ES_MX_PIECES = [
    "¡Claro!",
    ("El vuelo de la Ciudad de México a Cancún cuesta aprox. $2,499.99 MXN y sale a las 3:30"
     " p.m. del 15 de marzo de 2024."),
    "¿Quieres que te ayude con el hotel?",
    ("El Sr. López, de la agencia, puede darte una cotización; llámalo al 55 1234 5678 o"
     " escribe a reservas@viajes.mx."),
    "Nota: los precios incluyen IVA, etc.",
    "Buen viaje... ¡Disfrútalo!",
]

FR_FR = reply(
    "<thinking>Je dois répondre en français.</thinking>",
    ("Bonjour ! Voici les informations demandées : le musée du Louvre ouvre à 9 h 00 et ferme à"
     " 18 h 00, sauf le mardi. 🇫🇷"),
    ("Le billet coûte 22,50 € par personne. M. Dupont et Mme Martin vous attendront à l'entrée"
     " principale, près de la pyramide."),
    "### À savoir",
    "* Réservez sur https://www.louvre.fr/ pour éviter la file d'attente…",
    "* Les enfants de moins de 18 ans entrent __gratuitement__ !",
    ("Pour toute question, écrivez à contact@louvre.fr ou appelez le 01 40 20 50 50. Bonne"
     " visite !"),
)
FR_FR_PIECES = [
    "Bonjour !",
    ("Voici les informations demandées : le musée du Louvre ouvre à 9 h 00 et ferme à 18 h 00,"
     " sauf le mardi."),
    "Le billet coûte 22,50 € par personne.",
    "M. Dupont et Mme Martin vous attendront à l'entrée principale, près de la pyramide.",
    "À savoir. Réservez sur https://www.louvre.fr/ pour éviter la file d'attente…",
    "Les enfants de moins de 18 ans entrent gratuitement !",
    "Pour toute question, écrivez à contact@louvre.fr ou appelez le 01 40 20 50 50.",
    "Bonne visite !",
]

GOLDENS = {
    "en-US": (EN_US, EN_US_PIECES),
    "en-GB": (EN_GB, EN_GB_PIECES),
    "en-IN": (EN_IN, EN_IN_PIECES),
    "hi-IN": (HI_IN, HI_IN_PIECES),
    "es-MX": (ES_MX, ES_MX_PIECES),
    "fr-FR": (FR_FR, FR_FR_PIECES),
}
LOCALES = list(GOLDENS)


@pytest.mark.parametrize("locale", LOCALES)
def test_golden(locale: str) -> None:
    text, pieces = GOLDENS[locale]
    assert shape(text, locale) == pieces


@pytest.mark.parametrize("locale", LOCALES)
def test_every_two_way_split_gives_the_golden(locale: str) -> None:
    text, pieces = GOLDENS[locale]
    for i in range(len(text) + 1):
        assert shape(text, locale, [i]) == pieces, f"split at {i}: {text[:i][-30:]!r}"


def random_cuts(rng: random.Random, n: int) -> list[int]:
    k = rng.randint(2, max(2, n // 3))
    return sorted(rng.sample(range(n + 1), min(k, n + 1)))


@pytest.mark.parametrize("locale", LOCALES)
def test_random_and_one_char_splits_give_the_golden(locale: str) -> None:
    text, pieces = GOLDENS[locale]
    assert shape(text, locale, list(range(1, len(text)))) == pieces  # 1-character deltas
    rng = random.Random(sum(map(ord, locale)))
    for _ in range(150):
        cuts = random_cuts(rng, len(text))
        assert shape(text, locale, cuts) == pieces, f"cuts {cuts}"


def filtered(text: str) -> str:
    think, fence = ThinkFilter(), FenceFilter()
    return fence.feed(think.feed(text) + think.flush()) + fence.flush()


@pytest.mark.parametrize("locale", LOCALES)
def test_chunker_loses_nothing(locale: str) -> None:
    text = filtered(GOLDENS[locale][0])
    rng = random.Random(7)
    splits = [random_cuts(rng, len(text)) for _ in range(30)]
    for cuts in [None, list(range(1, len(text))), *splits]:
        pieces = chunk(text, locale, cuts)
        assert all(p == p.strip() and p for p in pieces)
        assert " ".join(pieces).split() == text.split()


@pytest.mark.parametrize("locale", LOCALES)
def test_normalize_sees_whole_pieces(locale: str) -> None:
    text, pieces = GOLDENS[locale]
    seen: list[tuple[str, str]] = []

    def record(piece: str, loc: str) -> str:
        seen.append((piece, loc))
        return piece.upper()

    rng = random.Random(3)
    shaper = SpeechShaper(locale, record)
    out: list[str] = []
    prev = 0
    for cut in random_cuts(rng, len(text)):
        out += shaper.feed(text[prev:cut])
        prev = cut
    out += shaper.feed(text[prev:]) + shaper.flush()
    assert out == [p.upper() for p in pieces]
    assert [p for p, _ in seen] == pieces and {loc for _, loc in seen} == {locale}


# --- first piece ------------------------------------------------------------------------


def test_first_piece_cut_at_clause_break_after_ten_chars() -> None:
    text = "Well, honestly, I think we should go now. It is late."
    # "Well," is too short; "Well, honestly," is long enough.
    assert chunk(text) == ["Well, honestly,", "I think we should go now.", "It is late."]


@pytest.mark.parametrize("mark", [";", ":", " —", " –"])
def test_first_piece_clause_marks(mark: str) -> None:
    first = chunk(f"Here is the plan{mark} we leave at dawn and walk.")[0]
    assert first == f"Here is the plan{mark}"


def test_first_piece_not_cut_before_a_number() -> None:
    text = "On March 15, 2024 we launched; it went well and people were happy about it."
    assert chunk(text) == [
        "On March 15, 2024 we launched;", "it went well and people were happy about it."
    ]
    assert chunk("Count 1, 2, 3, 4 and 5 times.") == ["Count 1, 2, 3, 4 and 5 times."]
    assert chunk("It costs $1,250.50 in total at 3:30 today.") == [
        "It costs $1,250.50 in total at 3:30 today."
    ]


def test_first_piece_forced_cut_after_fifteen_words() -> None:
    text = (
        "We talked for ages about the plan for the weekend and the trip to the lake with the"
        " whole family and friends."
    )
    first, rest = chunk(text)
    assert len(first.split()) == 15 and first.endswith("to the")
    assert rest == "lake with the whole family and friends."


def test_forced_cut_waits_for_two_plain_words() -> None:
    text = (
        "The shipment of 1,250 units worth $3,400.75 arrived on March 15 2024 at 3:30 pm"
        " 10:00 UTC+1 via https://x.org/t on 2024-03-15 to bob@x.org then went on to the depot."
    )
    first = chunk(text)[0]
    assert first.endswith("bob@x.org then")  # first gap with a plain word on both sides
    assert len(first.split()) > 15


def test_forced_cut_keeps_dotless_title_with_its_name() -> None:
    text = (
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
        " Mr Smith came home late"
    )
    first = chunk(text, "en-GB")[0]
    assert first.endswith("Mr Smith")


def test_thresholds_are_parameters() -> None:
    text = "Alpha beta gamma delta epsilon, zeta eta. Theta iota. Kappa lambda mu nu xi."
    assert chunk(text, first_max_words=3) == [
        "Alpha beta gamma", "delta epsilon, zeta eta.", "Theta iota. Kappa lambda mu nu xi."
    ]
    assert chunk(text, first_min_chars=100, min_chars=5) == [
        "Alpha beta gamma delta epsilon, zeta eta.", "Theta iota.", "Kappa lambda mu nu xi."
    ]


def test_first_piece_only_emoji_does_not_use_up_the_early_cut() -> None:
    assert shape("🎉🎉\nWell, honestly, I think so. Yes it is.", "en-US") == [
        "Well, honestly,", "I think so. Yes it is."
    ]


# --- sentence boundaries ----------------------------------------------------------------


def test_short_later_sentences_are_merged() -> None:
    assert chunk("Yes. No. Maybe so. This is a longer sentence. Ok.") == [
        "Yes.", "No. Maybe so. This is a longer sentence.", "Ok."
    ]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("I met Dr. Who. Then etc. and so on.", ["I met Dr. Who.", "Then etc. and so on."]),
        ("Hi! It was 3.5 km away, e.g. Paris. Ok then.", ["Hi!", "It was 3.5 km away, e.g. Paris.",
                                                       "Ok then."]),
        ("Hi! Meet at 10 a.m. tomorrow or at 5 p.m. Then leave.",
         ["Hi!", "Meet at 10 a.m. tomorrow or at 5 p.m.", "Then leave."]),
        ("Hi! Call No. 5 now please. No. I don't think so.",
         ["Hi!", "Call No. 5 now please.", "No. I don't think so."]),
        ("Hi! J. K. Rowling met the U.S. Army there.",
         ["Hi!", "J. K. Rowling met the U.S. Army there."]),
        ("Hi! Well... maybe not today. Wait... What happened here?",
         ["Hi!", "Well... maybe not today.", "Wait... What happened here?"]),
        ('Hi! He said "Stop." Then he left the room. (It was late.) We slept.',
         ["Hi!", 'He said "Stop." Then he left the room.', "(It was late.) We slept."]),
        ("Hi! Visit example.com. It is great and useful. Mail a.b@c.org. Done.",
         ["Hi!", "Visit example.com. It is great and useful.", "Mail a.b@c.org. Done."]),
        ("Really?! Yes, really. It happened.", ["Really?!", "Yes, really. It happened."]),
        ("Hi! Prices as of Jan. 2024 are final. Ok.", ["Hi!", "Prices as of Jan. 2024 are final.",
                                                      "Ok."]),
        ("Steps:\n1. Preheat the oven to 200 degrees.\n2. Bake it well.\n",
         ["Steps:", "1. Preheat the oven to 200 degrees.", "2. Bake it well."]),
    ],
)
def test_sentence_boundaries_en(text: str, pieces: list[str]) -> None:
    assert chunk(text) == pieces
    assert chunk(text, cuts=list(range(1, len(text)))) == pieces


@pytest.mark.parametrize(
    ("locale", "text", "pieces"),
    [
        ("es-MX", "El Sr. López llegó. Ud. puede pasar ahora mismo. Hola.",
         ["El Sr. López llegó.", "Ud. puede pasar ahora mismo.", "Hola."]),
        ("es-MX", "¿Vienes? ¡Claro que sí, amigo mío! Nos vemos.",
         ["¿Vienes?", "¡Claro que sí, amigo mío!", "Nos vemos."]),
        ("fr-FR", "M. Dupont et Mme Martin arrivent bientôt. Voilà.",
         ["M. Dupont et Mme Martin arrivent bientôt.", "Voilà."]),
        ("fr-FR", "Il a dit « Oui. » Puis il est parti très vite.",
         ["Il a dit « Oui. »", "Puis il est parti très vite."]),
        ("hi-IN", "डॉ. शर्मा आज आएंगे। ठीक है। बहुत अच्छा॥ धन्यवाद।",
         ["डॉ. शर्मा आज आएंगे।", "ठीक है। बहुत अच्छा॥ धन्यवाद।"]),
        ("en-IN", "Pay Rs. 500 now. It is due today, sir.", ["Pay Rs. 500 now.",
                                                            "It is due today, sir."]),
    ],
)
def test_sentence_boundaries_other_locales(locale: str, text: str, pieces: list[str]) -> None:
    assert chunk(text, locale) == pieces
    assert chunk(text, locale, list(range(1, len(text)))) == pieces


def test_boundary_waits_for_following_text() -> None:
    chunker = SentenceChunker("en-US")
    assert chunker.feed("It costs 3.") == []  # 3.5 or the end of a sentence?
    assert chunker.feed("5 dollars. ") == []  # the next word decides
    assert chunker.feed("Dr") == ["It costs 3.5 dollars."]
    assert chunker.feed(". Who is here and very well. ") == []
    assert chunker.feed("o") == []  # lower case: not a boundary
    assert chunker.flush() == ["Dr. Who is here and very well. o"]


def test_flush_returns_the_rest() -> None:
    chunker = SentenceChunker("en-US")
    assert chunker.feed("Hello there") == []
    assert chunker.flush() == ["Hello there"]
    assert chunker.flush() == []
    assert chunker.feed("New stream here. Ok.") == ["New stream here."]


def test_line_breaks_are_boundaries_and_reported() -> None:
    chunker = SentenceChunker("en-US")
    pieces = chunker.feed_pieces("# A title\nSome text that is long enough.\nmore")
    assert pieces + chunker.flush_pieces() == [
        Piece("# A title", True),
        Piece("Some text that is long enough.", True),
        Piece("more", False),
    ]


# --- the shaper -------------------------------------------------------------------------


def test_orphan_emphasis_markers_across_a_boundary() -> None:
    text = "**Note. This** is important to know. **The bold part starts here. And ends here** ok."
    assert shape(text, "en-US") == [
        "Note.", "This is important to know.", "The bold part starts here.", "And ends here ok."
    ]


def test_pieces_of_only_markup_are_dropped() -> None:
    assert shape("Here you go.\n\n---\n\n😀😀\n", "en-US") == ["Here you go."]
    assert shape("```\ncode\n```", "en-US") == []


def test_unclosed_think_block_and_partial_tag() -> None:
    shaper = SpeechShaper("en-US", identity)
    assert shaper.feed("Hello there friend. <thi") == []
    # The boundary needs the next visible character; the rest is all reasoning.
    assert shaper.feed("nk>secret plan. Nothing here") == []
    assert shaper.flush() == ["Hello there friend."]


def test_shape_text() -> None:
    assert shape_text("# Hi\nI'm **ready** 🚀", "en-US", identity) == "Hi. I'm ready"
    assert shape_text("## नमस्ते\nकैसे हैं आप", "hi-IN", identity) == "नमस्ते। कैसे हैं आप"


def test_the_default_normalizer_speaks_each_piece_in_the_shapers_locale() -> None:
    assert shape_text("It costs $5. See you at 3:30 PM.", "en-GB") == (
        "It costs five dollars. See you at three thirty in the afternoon.")


# Fragments that cut across every pattern: abbreviations, decimals, currency, dates, times,
# e-mail, URLs, markdown, tags, fences, emoji, Devanagari and Spanish punctuation.
FRAGMENTS = [
    "Hello", "world", "Dr.", "Mr", "etc.", "a.m.", "p.m.", "3.5", "$1,250.50", "e.g.", "J.",
    "U.S.", "No.", "5", "...", "…", "?", "!", ".", ",", ";", ":", "—", " – ", "\n", "\n\n",
    "**", "*", "_", "__", "`", "```", "```py\n", "~~~", "<think>", "</think>", "<thinking>",
    "<", "<th", "</", ">", "1.", "2)", "#", "## ", "> ", "|", "---", "🎉", "👨‍👩‍👧", "🇮🇳", "1️⃣",
    "नमस्ते", "।", "॥", "¿", "¡", "Qué", '"', "'", ")", "(", "[x](https://u.v)", "<https://a.b>",
    "john.doe@example.com", "https://x.org/a.b?q=1", "March 15, 2024", "3:30", "the", "quick",
    "brown", "fox", "Then", "and", "« Oui. »",
]


@pytest.mark.parametrize("seed", range(4))
def test_random_compositions_are_split_invariant(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 40))]
        text = "".join(p + " " * rng.randint(0, 1) for p in parts)
        locale = rng.choice(LOCALES)
        whole = shape(text, locale)
        assert shape(text, locale, list(range(1, len(text)))) == whole, text
        for cut in range(len(text) + 1):
            assert shape(text, locale, [cut]) == whole, (text, cut)
        raw = filtered(text)
        pieces = chunk(raw, locale)
        assert " ".join(pieces).split() == raw.split()
        assert chunk(raw, locale, random_cuts(rng, len(raw))) == pieces

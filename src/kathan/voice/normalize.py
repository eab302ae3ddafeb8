"""Speakable text for a TTS engine: ``normalize(text, locale)``.

One complete piece of plain text (markdown already stripped) comes in; the same text
comes out with every number, date, time, amount, unit, address and stray symbol spelled
in the locale's words, whitespace collapsed, and no ASCII or Devanagari digit left.
Everything else (words, ``.,?!।;:``) is kept. Word tables live in ``data/speech_*.yaml``.

The contract (choices made):

- Locales: en-US, en-GB, en-IN, hi-IN, es-MX, fr-FR; any other tag raises ValueError.
  Numbers follow CLDR (``unicode_rbnf``): lakh/crore in en-IN and hi-IN, "one hundred
  and five" in en-GB, Devanagari words in hi-IN. es/fr counting numbers say "uno", "un";
  before a noun they agree with it ("un peso", "una hora", "vingt-et-une heures").
- Decimals: en, hi digit by digit ("three point one four"); es-MX "tres punto catorce",
  fr "trois virgule quatorze" (one or two decimals read as a number). es-MX writes
  ``3.5`` like English; fr-FR ``3,5`` (``3.5`` also read) and ``1 234 567``.
- Long digit runs (7+ digits without separators, or 2+ starting with 0 like ``0042``)
  are read digit by digit, except round numbers (``2500000``).
- Numbers: ``1,234,567``, en-IN/hi ``12,34,567``, and ``1 234 567`` (space, U+00A0 or
  U+202F) in every locale; a minus is "minus", "menos", "moins", "माइनस".
- Phones (7-15 digits in groups joined by spaces, dashes, dots or parentheses, not a
  thousands grouping; or ``+`` and 7+ digits): digit by digit, a comma between written
  groups; fr reads groups of two as numbers ("zéro un, vingt-trois").
- Units only right after a number (``5 km``, ``5km``, ``2 L``); en-GB and en-IN spell
  "kilometre", "litre". ``$5/month``: "per month". Decades: "the nineteen nineties".
- Money: "twelve pounds and ninety-nine pence", es-MX "cinco pesos con cincuenta
  centavos", fr "trois euros cinquante" (minor unit named only alone: "cinquante
  centimes"), hi "पाँच रुपये और पचास पैसे"; zero minor units are not said. **In es-MX
  a bare ``$`` is pesos**; ``US$``/``USD`` are dollars. Every sign in use has a name
  (``speech_common.yaml``): ``¥`` is yen (``CN¥``/``CNY``/``RMB`` yuan), ``₩ ₽ ₺ ₪ ฿ ₫ ₱``
  and the rest, ``50¢`` "fifty cents"; a currency without minor units in use (yen, won)
  reads decimals as a number. Any other currency sign (Unicode category Sc, historic ones)
  next to an amount is dropped: the amount is spoken, never the sign. Full-width signs
  (``＄ ￥``) are their plain forms.
- Dates: en-US "March fifteenth, twenty twenty-four", en-GB "the fifteenth of March,
  twenty twenty-four", en-IN "fifteenth March, twenty twenty-four", es-MX "quince de
  marzo de dos mil veinticuatro" ("primero de mayo"), fr "quinze mars deux mille
  vingt-quatre" ("premier mai"), hi "पन्द्रह मार्च दो हज़ार चौबीस". Numeric dates are
  month-first in en-US, day-first elsewhere (the other order if that one is invalid).
  English years pair ("nineteen ninety-nine", "two thousand five", en-GB "two thousand
  and five"; also a bare year after "in", "since", "by"...); Hindi years before 2000 say
  hundreds ("उन्नीस सौ सैंतालीस"); es and fr years are cardinals.
- Times: English reads 12-hour time and, when the period is known (AM/PM, or 24-hour
  ``15:45``/``09:05``), says it in words: "three thirty in the afternoon", "nine oh five
  in the morning", "twelve noon", "twelve midnight"; otherwise "three thirty", "three
  o'clock". es-MX "las tres y media de la tarde", "la una y cuarto", "las tres en punto"
  (a written "las"/"la" is reused). fr 24-hour "quinze heures quarante-cinq", "midi",
  "minuit" (``15h45`` too). hi "दोपहर साढ़े तीन बजे", सवा/पौने/डेढ़/ढाई, else
  "तीन बजकर दस मिनट".
- Ranges ``10-20``: "ten to twenty", "diez a veinte", "dix à vingt", "दस से बीस"; a
  spaced ASCII hyphen (``10 - 5``) is a subtraction ("minus").
- Scores and ratios: ``3:2``, ``16:9``, ``1:100`` and ``three:two`` are "three to two"
  ("tres a dos", "trois à deux", "तीन से दो"), as ``2-1`` is (a range). ``H:MM`` with
  two-digit minutes (``3:30``) stays a time unless a score word (``score_cues``: won,
  score, ratio...) is among the three words before it and the word right before is not
  a time word (``score_not_after``): "won 21:15" is a score, "won at 10:30" a time.
- Emails and URLs: "john dot doe at example dot com" (arroba/punto, arobase/point,
  एट द रेट/डॉट); a URL is its host without the scheme and ``www.``, then its path, one
  "slash" ("diagonal", "slash", "स्लैश") before each segment: "example dot com slash
  pricing slash plans"; the query and fragment are not spoken; digits one by one. A
  bare domain is a URL when its TLD is a known one (in any case) or a path follows it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from kathan.voice import numwords as nw
from kathan.voice.numwords import Gender

__all__ = ["LOCALES", "normalize"]

LOCALES: tuple[str, ...] = ("en-US", "en-GB", "en-IN", "hi-IN", "es-MX", "fr-FR")

Match = re.Match[str]
# Devanagari digits, and full-width currency signs as their plain forms.
_PLAIN = str.maketrans("०१२३४५६७८९＄﹩￡￥￦￠", "0123456789$$£¥₩¢")
_CAPITAL = "A-ZÁÉÍÓÚÑÀ-ÖØ-Þ¿¡"
_LETTER = r"[\w\u0900-\u097F]"  # a word character, Devanagari vowel signs included


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((resources.files("kathan.voice") / "data" / name).read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def _alt(keys: Iterable[str]) -> str:
    return "|".join(re.escape(k) for k in sorted(set(keys), key=len, reverse=True))


_COMMON = _load("speech_common.yaml")
_TAIL = r"(?=[.,;:!?)\]'\"]*(?:\s|$))"  # what may follow a URL: punctuation, then space
_HOST = r"(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
# A URL's path is spoken (its query and fragment are not): example.com/pricing/plans.
_PATH = r"(?P<path>/[^\s?#]*?)?(?:[?#]\S*?)?"
_URLS = (
    re.compile(rf"\b(?:https?|ftp)://(?:[^\s/@]+@)?{_HOST}(?::\d+)?{_PATH}{_TAIL}"),
    re.compile(rf"(?<![\w.@/])www\.{_HOST}(?::\d+)?{_PATH}{_TAIL}"),
    re.compile(
        r"(?<![\w.@/-])(?P<host>(?:[A-Za-z0-9-]+\.)+(?i:" + _alt(_COMMON["tlds"]) + r"))"
        rf"(?![\w-]){_PATH}{_TAIL}"
    ),
    # Any other domain, when a path follows it: example.shop/plans.
    re.compile(
        r"(?<![\w.@/-])(?P<host>(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24})"
        r"(?P<path>/[^\s?#/][^\s?#]*?)(?:[?#]\S*?)?" + _TAIL
    ),
)
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][\w.+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
_ADDRESS_PARTS = re.compile(r"([.@_+-]|\d+)")
_ISO_DATE = re.compile(r"(?<![\d/.:-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\d]|[/.:-]\d)")
_NUM_DATE = re.compile(r"(?<![\d/.:-])(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?![\d]|[/.:-]\d)")
_PHONE = re.compile(
    r"(?<![\w.,+/:-])(?:\+\s?)?(?:\(\d{1,5}\)|\d{1,5})"
    r"(?:(?:[ .-]|\s?(?=\())?(?:\(\d{1,5}\)|\d{1,5}))+(?![\w]|[.,/:-]?\d)"
)
_VERSION = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){2,}(?![\d]|\.\d)")
_LONG_DIGITS = re.compile(r"(?<![\d.,])(?<!\d )(?:\d{7,}|0\d+)(?![\d]|[.,]\d)")
_ROUND = re.compile(r"[1-9]\d?0{5,}")
_HASH_NUMBER = re.compile(r"#\s?(?=\d)")
_ABOUT = re.compile(r"~\s?(?=[-−]?\d|[$€£₹])")
_FALLBACK = re.compile(r"\d+")
_DIGIT = re.compile(r"\d")
_FOUR_DIGITS = re.compile(r"\d{4}")
_MARK = r"(?P<ap>[AaPp])\.?\s?[Mm](?P<dot>\.)?(?![A-Za-z])"
# Symbols left after the numbers: (pattern, replacement with {word} keys from the table).
_SYMBOLS = tuple((re.compile(p), r) for p, r in (
    (r"\b([CF])#(?!\w)", r"\1 {sharp}"),  # C#
    (r"(?<=\w)\+\+(?!\w)", " {plus} {plus}"),  # C++
    (r"#(?=[^\W\d_])", ""),  # #hashtag
    (r"\s*&\s*", " {and} "),
    (rf"(?<={_LETTER})\s*\+\s*(?={_LETTER})", " {plus} "),
    (r"\s*={1,3}\s*", " {equals} "),
    (r"\s*@\s*", " {at} "),
    (rf"(?<={_LETTER})[*_`|~^<>\[\]{{}}]+(?={_LETTER})", " "),  # snake_case, a|b
    (r"[*_`|~^<>\[\]{}]+", ""),
))
_SPACES = re.compile(r"\s+")
_ELISION = re.compile(r"\b([Dd]|[Qq]u)e (une?)\b")


@dataclass(frozen=True)
class _Loc:
    tag: str
    lang: str  # en, es, fr, hi
    d: dict[str, Any]  # merged word tables
    w: dict[str, str]  # single words
    money: dict[str, str]  # currency sign or code -> ISO code
    months: dict[str, int]  # lower-case month name or alias -> 1..12
    res: dict[str, re.Pattern[str]]
    feminine: frozenset[str]  # es, fr: feminine nouns (una hora, une heure)
    dates: tuple[re.Pattern[str], ...]
    times: tuple[re.Pattern[str], ...]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) else value
    return out


def _month_regex(d: dict[str, Any]) -> str:
    full = [re.escape(m) for m in d["months"]]
    alias = [re.escape(a) + (r"\.?" if a.isascii() and a.isalpha() else "")
             for a in d.get("month_aliases", {})]
    return "(?P<m>" + "|".join(sorted(full + alias, key=len, reverse=True)) + r")(?!\w)"


@functools.cache
def _locale(tag: str) -> _Loc:
    if tag not in LOCALES:
        raise ValueError(f"unsupported voice locale: {tag!r} (expected one of {LOCALES})")
    lang = tag[:2]
    d = _load(f"speech_{lang}.yaml")
    d = _merge(d, d.pop("variants", {}).get(tag, {}))
    if lang == "fr":
        num = (r"(?:\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)|\d{1,3}(?:,\d{2,3})+,\d{3}(?![\d,])"
               r"|\d+)(?:[,.]\d+)?")  # 1 234,5; English 1,234,567 (two commas) too
        amount = rf"(?:\d{{1,3}}(?:,\d{{2,3}})*,\d{{3}}\.\d{{1,2}}(?![\d]|[.,]\d)|{num})"
    else:
        num = (r"(?:\d{1,3}(?:(?:,\d{2,3})*,\d{3}|(?:[\u00a0\u202f]\d{3})+|(?: \d{3})+)(?!\d)"
               r"|\d+)(?:\.\d+)?")  # 1,234,567; 12,34,567; 1 234 567
        amount = rf"(?:\d{{1,3}}(?:\.\d{{3}})*,\d{{1,2}}(?![\d]|[.,]\d)|{num})"
    money = {**_COMMON["currency_symbols"], **_COMMON["currency_overrides"].get(tag, {})}
    signs = [s for s in money if not s[0].isalpha()]
    codes = [s for s in money if s[0].isalpha()]
    pre = rf"(?:{_alt(signs)}|(?<![A-Za-z])(?:{_alt(codes)})(?![a-z]))"
    post = rf"(?:{_alt(signs)}|(?<![A-Za-z])(?:{_alt(c for c in codes if c.isupper())})(?!\w))"
    starts = re.escape("".join(sorted({c[0] for c in money})))  # first letters of the signs
    scales = rf"(?:{_alt(d['scales'])}|{_alt(d['scale_words'])})(?!\w)"
    sign = r"(?P<neg>(?<![\w.,)\]])[-−])?"
    qty = rf"(?=[-−\d]){sign}(?P<a>{num})(?:\s?[-–]\s?(?P<b>{num}))?"
    months: dict[str, int] = {m.lower(): i + 1 for i, m in enumerate(d["months"])}
    months |= {k.lower().rstrip("."): v for k, v in d.get("month_aliases", {}).items()}
    abbr, titles = d.get("abbreviations", {}), d.get("titles", {})
    res = {
        "money_pre": re.compile(
            rf"(?=[-−{starts}]){sign}(?P<sym>{pre})\s?(?P<a>{amount})"
            rf"(?:\s?[-–]\s?(?:{pre})?\s?(?P<b>{amount}))?(?:\s?(?P<sc>{scales}))?(?![\d])"),
        "money_post": re.compile(
            rf"(?=[-−\d]){sign}(?:(?P<a0>{amount})\s?[-–]\s?)?(?P<a>{amount})"
            rf"(?:\s?(?P<sc>{scales}))?[\s\u00a0\u202f]?(?P<sym>{post})"),
        "money_hint": re.compile(_alt(money)),
        "percent": re.compile(rf"(?<![\d.,]){qty}[\s\u00a0\u202f]?%"),
        "units": re.compile(
            rf"(?<![\d.,]){qty}[\s\u00a0\u202f]?(?P<u>{_alt(d['units'])})(?![\w²³'’])"),
        "range": re.compile(
            rf"(?=[-\d])(?<![\w.,-])(?P<a>-?{num})(?P<s1>\s?)(?P<dash>[-–—])(?P<s2>\s?)"
            rf"(?P<b>{num})(?!\d)"),
        "fraction": re.compile(r"(?<![\w/.,:])(\d{1,3})/(\d{1,3})(?![\w/]|[.,]\d)"),
        "number": re.compile(
            rf"(?=[-−+\d])(?P<sign>(?<![\w.,)\]])[-−+])?(?<!\d)(?P<n>{num})(?!\d)"),
        "abbr": re.compile(rf"(?<![\w.])(?:{_alt(abbr)})(?!\w)") if abbr else _NEVER,
        "title": re.compile(rf"(?<![\w.])(?:{_alt(titles)})(?=\s+[{_CAPITAL}\u0900-\u097F])")
        if titles else _NEVER,
        "ordinal": re.compile(rf"(?<![\w.,])(?P<n>\d+)(?P<s>{d['ordinal_suffix']})"
                              rf"(?!{_LETTER})", 0 if lang == "hi" else re.IGNORECASE),
        "per": re.compile(rf"(?<={_LETTER})/(?=(?:{_alt(d['per_nouns'])})(?!{_LETTER}))"),
        "decade": re.compile(r"(?=['\d])(?<![\w.,])'?(?P<n>\d{2}|\d{4})'?s(?!\w)"),
        "score": re.compile(
            r"(?<![\d:.,/])(?P<a>\d{1,3}):(?P<b>\d{1,3})(?![\d:]|[.,]\d"
            r"|\s?(?:[AaPp]\.?\s?[Mm]\b|बजे|hrs?(?![A-Za-z])|h(?![A-Za-z])))"),  # times
        "word_score": re.compile(
            rf"(?<!{_LETTER})(?P<a>{_alt(_number_words(tag))}):(?P<b>{_alt(_number_words(tag))})"
            rf"(?!{_LETTER})", 0 if lang == "hi" else re.IGNORECASE),
        "year": re.compile(
            r"\b(?i:" + "|".join(d.get("year_cues", ["(?!)"])) + r")\s+(?P<y>\d{4})"
            r"(?![\d]|[.,]\d|\s?[-–]\s?\d)"),
    }
    feminine = set(d.get("feminine_nouns", []))
    for table in (d["units"], d["currencies"]):
        feminine |= {f for forms in table.values() if forms[-1] == "f" for f in forms[:2]}
    return _Loc(tag, lang, d, d["words"], money, months, res, frozenset(feminine),
                _date_patterns(d, lang), _time_patterns(lang))


_NEVER = re.compile(r"(?!)")


def _number_words(tag: str) -> set[str]:
    """The locale's words for 0 to 100, as a score may be written: three:two."""
    genders: tuple[Gender, ...] = ("m", "f", "")
    return {nw.cardinal(n, tag, g) for n in range(101) for g in genders}


def _date_patterns(d: dict[str, Any], lang: str) -> tuple[re.Pattern[str], ...]:
    dt = d["date"]
    mon = _month_regex(d)
    sfx = f"(?:{dt['suffix']})?" if dt.get("suffix") else ""
    of = ""
    if dt.get("of"):
        of = rf"\s+{dt['of']}" if dt.get("of_required") else rf"(?:\s+{dt['of']})?"
    yof = rf"(?:{dt['year_of']})\s+" if dt.get("year_of") else ""
    yr = rf"(?:,?\s+{yof}(?P<y>\d{{4}})(?!\d))?"
    art = rf"(?:(?P<art>\b(?i:{dt['article']}))\s+)?" if dt.get("article") else ""
    day = r"(?<![\d.,:/])(?P<d>\d{1,2})"
    flags = 0 if lang == "en" else re.IGNORECASE
    first = rf"(?=\d|(?i:{dt['article']})\s)" if dt.get("article") else r"(?=\d)"  # cheap misses
    pats = [rf"{first}{art}{day}{sfx}{of}\s+{mon}{yr}"]
    if dt.get("month_first"):
        pats.append(rf"{mon}\s+{day}{sfx}(?![\d:]|[.,]\d|\s?(?:[AaPp]\.?[Mm]\b|%)){yr}")
    pats.append(rf"{mon},?\s+{yof}(?P<y>\d{{4}})(?!\d)")
    return tuple(re.compile(p, flags) for p in pats)


def _time_patterns(lang: str) -> tuple[re.Pattern[str], ...]:
    art = r"(?:\b(?P<art>[Ll]as?)\s+)?" if lang == "es" else ""
    tail = {"hi": r"(?:\s?बजे)?", "es": r"(?:\s?(?:hrs|h)(?!\w))?"}.get(lang, "")
    start = r"(?<![\d:.,])(?P<h>\d{1,2})"
    pats = [rf"{art}{start}:(?P<mi>\d{{2}})(?![\d:]|[.,]\d)(?:\s?{_MARK})?{tail}",
            rf"{art}{start}\s?{_MARK}{tail}"]
    if lang == "fr":
        pats.append(rf"{start}\s?h\s?(?P<mi>\d{{2}})?(?![\w])")
    return tuple(re.compile(p) for p in pats)


# --- helpers -------------------------------------------------------------------------------


def _glue(m: Match, words: str) -> str:
    """Put spaces between spoken words and letters the digits were glued to (3D, v2)."""
    s, a, b = m.string, m.start(), m.end()
    left = " " if a > 0 and s[a - 1].isalpha() else ""
    return left + words + (" " if b < len(s) and s[b].isalpha() else "")


def _capital(m: Match, words: str) -> str:
    """``words`` capitalised when they replace a capitalised word that starts a sentence."""
    before = m.string[: m.start()].rstrip()
    if m[0][:1].isupper() and (not before or before[-1] in ".!?¡¿"):
        return words[:1].upper() + words[1:]
    return words


def _end_dot(m: Match, had_dot: bool) -> str:
    """The sentence's full stop, when the replaced text swallowed it (``at 3 p.m.``)."""
    rest = m.string[m.end():]
    if had_dot and (not rest.strip() or re.match(rf"\s+[{_CAPITAL}]", rest)):
        return "."
    return ""


def _years(plain: str) -> bool:
    return len(plain) == 4 and plain.isdigit() and 1100 <= int(plain) < 2100


# --- passes ----------------------------------------------------------------------------------


def _address(text: str, loc: _Loc) -> str:
    names = {".": "dot", "@": "at", "_": "underscore", "+": "plus", "-": "dash"}
    return " ".join(loc.w[names[p]] if p in names else nw.digits(p, loc.tag) if p.isdigit()
                    else p for p in _ADDRESS_PARTS.split(text) if p)


def _addresses(text: str, loc: _Loc) -> str:
    def url(m: Match) -> str:
        words = _address(re.sub(r"^(?i:www)\.", "", m["host"]), loc)
        for segment in (m["path"] or "").split("/"):
            if any(c.isalnum() for c in segment):  # not an empty or a /*/ segment
                words += f" {loc.w['slash']} {_address(segment, loc)}"
        return words

    if "." not in text:
        return text
    if "@" in text:
        text = _EMAIL.sub(lambda m: _address(m[0], loc), text)
    for pattern in _URLS:
        text = pattern.sub(url, text)
    return text


def _abbreviations(text: str, loc: _Loc) -> str:
    abbr, titles = loc.d.get("abbreviations", {}), loc.d.get("titles", {})

    def abbreviation(m: Match) -> str:
        key = m[0]
        keep = key.endswith(".") and (key.startswith("etc") or not m.string[m.end():].strip())
        return _capital(m, str(abbr[key])) + _end_dot(m, keep)

    text = loc.res["abbr"].sub(abbreviation, text)
    text = loc.res["title"].sub(lambda m: _capital(m, str(titles[m[0]])), text)
    text = _HASH_NUMBER.sub(loc.w["number"] + " ", text)  # #5 -> number 5
    return _ABOUT.sub(loc.w["about"] + " ", text)  # ~5 -> about 5


def _dates(text: str, loc: _Loc) -> str:
    def _date(loc: _Loc, day: int | None, month: int, year: int | None) -> str | None:
        return nw.date(day, month, year, loc.tag, loc.d)

    def iso(m: Match) -> str:
        return _date(loc, int(m[3]), int(m[2]), int(m[1])) or m[0]

    def numeric(m: Match) -> str:
        a, b, y = int(m[1]), int(m[3]), int(m[4])
        day, month = (b, a) if loc.tag == "en-US" else (a, b)
        return _date(loc, day, month, y) or _date(loc, month, day, y) or m[0]

    def written(m: Match) -> str:
        groups = m.groupdict()
        month = loc.months[m["m"].rstrip(".").lower()]
        day = int(groups["d"]) if groups.get("d") else None
        words = _date(loc, day, month, int(m["y"]) if m["y"] else None)
        if words is None:
            return m[0]
        return words[0].upper() + words[1:] if (groups.get("art") or "x")[0] == "T" else words

    text = _NUM_DATE.sub(numeric, _ISO_DATE.sub(iso, text))
    for pattern in loc.dates:
        text = pattern.sub(written, text)
    return text


def _times(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        groups = m.groupdict()
        h, mi, ap = int(m["h"]), int(groups.get("mi") or 0), groups.get("ap")
        if mi > 59 or h > (12 if ap else 23) or (ap and h == 0):
            return m[0]
        known = bool(ap) or h == 0 or h > 12 or (len(m["h"]) == 2 and m["h"][0] == "0")
        if ap:
            h = h % 12 + (12 if ap in "Pp" else 0)
        words = nw.clock(h, mi, known, loc.tag, loc.d)
        if loc.lang == "es":  # las tres, la una; a written article keeps its capital
            art = "la" if h % 12 == 1 else "las"
            words = f"{art.capitalize() if (groups.get('art') or 'l')[0] == 'L' else art} {words}"
        return words + _end_dot(m, bool(groups.get("dot")))

    for pattern in loc.times:
        text = pattern.sub(replace, text)
    return text


def _word_scores(text: str, loc: _Loc) -> str:
    """three:two is "three to two" (as 3:2 and 2-1 are read)."""
    if ":" not in text:
        return text
    return loc.res["word_score"].sub(lambda m: f"{m['a']} {loc.w['to']} {m['b']}", text)


def _scores(text: str, loc: _Loc) -> str:
    """Scores and ratios: 3:2, 16:9, 1:100 are "three to two". H:MM with two-digit minutes
    is left to the times, unless a score word (``score_cues``) is among the three words
    before it and the word right before is not one of ``score_not_after`` ("won 21:15",
    "won at 10:30")."""
    cues, nots = set(loc.d.get("score_cues", [])), set(loc.d.get("score_not_after", []))

    def replace(m: Match) -> str:
        a, b = m["a"], m["b"]
        if len(b) == 2 and int(a) <= 23 and int(b) <= 59:
            before = [w.strip(".,;:!?()\"'").lower() for w in m.string[: m.start()].split()[-3:]]
            if not (cues & set(before)) or (before and before[-1] in nots):
                return m[0]
        return _glue(m, f"{nw.number(a, loc.tag)} {loc.w['to']} {nw.number(b, loc.tag)}")

    return loc.res["score"].sub(replace, text) if ":" in text else text


def _versions(text: str, loc: _Loc) -> str:
    dot = f" {loc.w['dot']} "
    return _VERSION.sub(
        lambda m: _glue(m, dot.join(nw.cardinal(int(p), loc.tag) for p in m[0].split("."))), text)


def _phones(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        s = m[0]
        groups = re.findall(r"\d+", s)
        total = sum(map(len, groups))
        plus = s.startswith("+")
        if not 7 <= total <= 15:
            return s
        if not (plus or "(" in s):
            seps = set(re.sub(r"[\d\s]", "", s)) | ({" "} if " " in s else set())
            if not seps or len(groups) < 2:
                return s
            if re.fullmatch(r"\d{1,3}(?: \d{3})+", s):
                return s  # 1 234 567 is a number
            if len(groups) == 2 and tuple(map(len, groups)) != (3, 4) and total < 10:
                return s
        words = nw.phone(groups, loc.tag)
        return f"{loc.w['plus']} {words}" if plus else words

    return _PHONE.sub(replace, text)


def _money(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        code, neg, found = loc.money[m["sym"]], "-" if m["neg"] else "", m.groupdict()
        amounts = [nw.plain(a, loc.tag) for a in (found.get("a0"), m["a"], found.get("b")) if a]
        amounts[0] = neg + amounts[0]
        high = nw.money(amounts[-1], code, loc.tag, loc.d, m["sc"])
        if len(amounts) == 1:
            return high
        low = amounts[0]  # $10-20: "ten to twenty dollars"; $1.50-$2: each in full
        low = nw.number(low, loc.tag) if "." not in low + amounts[1] else nw.money(
            low, code, loc.tag, loc.d)
        return f"{low} {loc.w['to']} {high}"

    if loc.res["money_hint"].search(text):
        text = loc.res["money_pre"].sub(replace, text)
        text = loc.res["money_post"].sub(replace, text)
    # A sign the tables do not name (a historic one): the amount is spoken, the sign not.
    return text if text.isascii() else _unnamed_signs().sub("", text)


@functools.cache
def _unnamed_signs() -> re.Pattern[str]:
    """Every currency sign (Unicode category Sc) next to a number."""
    signs = re.escape("".join(
        c for c in map(chr, range(0x20000)) if unicodedata.category(c) == "Sc"))
    return re.compile(rf"[{signs}]\s?(?=[-−]?\d)|(?<=\d)\s?[{signs}]")


def _quantity(m: Match, loc: _Loc, gender: Gender) -> tuple[str, str]:
    """Words for a number or a range, and the plain last number (for plural choice)."""
    neg = "-" if m["neg"] else ""
    a = neg + nw.plain(m["a"], loc.tag)
    if not m["b"]:
        return nw.number(a, loc.tag, gender), a
    b = nw.plain(m["b"], loc.tag)
    return f"{nw.number(a, loc.tag, gender)} {loc.w['to']} {nw.number(b, loc.tag, gender)}", b


def _percent(text: str, loc: _Loc) -> str:
    if "%" not in text:
        return text
    return loc.res["percent"].sub(lambda m: f"{_quantity(m, loc, '')[0]} {loc.w['percent']}", text)


def _units(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        forms = loc.d["units"][m["u"]]
        gender: Gender = "f" if len(forms) > 2 and forms[2] == "f" else "m"
        words, last = _quantity(m, loc, gender)
        unit = forms[0] if not m["b"] and nw.singular(last, loc.tag) else forms[1]
        return _glue(m, f"{words} {unit}")

    return loc.res["units"].sub(replace, text)


def _decades(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        n = int(m["n"])
        if n % 10 or not (20 <= n < 100 or 1100 <= n < 2100):
            return m[0]
        before = m.string[: m.start()].split()
        if n < 100 and "'" not in m[0] and (not before or before[-1].lower() not in cues):
            return m[0]  # 30s is thirty seconds; the 30s, her 30s, '30s are decades
        return nw.decade(n, loc.tag)

    cues: list[str] = loc.d.get("decade_cues", [])
    return loc.res["decade"].sub(replace, text) if cues else text


def _ordinals(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        n, s = int(m["n"]), m["s"].lower()
        gender: Gender = "m"
        form = ""
        if loc.lang == "es":
            gender = "f" if "ª" in s else "m"
            after = re.match(r"\s+([a-záéíóúñ]+)", m.string[m.end():])
            if s.endswith("er") or (gender == "m" and after and after[1] not in loc.d["not_nouns"]):
                form = "adjective"
        elif loc.lang == "fr":
            if n == 2 and s.startswith("nd"):  # second, seconde, seconds, secondes
                return "second" + ("e" if "nde" in s else "") + ("s" if s.endswith("s") else "")
            gender = "f" if s.startswith(("r", "è")) and n == 1 else "m"
            form = "plural" if s.endswith("s") else ""
        elif loc.lang == "hi" and not s.isascii():
            gender = "f" if "ी" in s else "m"
            form = "oblique" if s.endswith(("े", "ें")) else ""
        return _glue(m, nw.ordinal(n, loc.tag, gender, form))

    return loc.res["ordinal"].sub(replace, text)


def _year_cues(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        if not _years(m["y"]):
            return m[0]
        return m[0][: m.start("y") - m.start()] + nw.year(int(m["y"]), loc.tag)

    return loc.res["year"].sub(replace, text) if _FOUR_DIGITS.search(text) else text


def _fractions(text: str, loc: _Loc) -> str:
    return loc.res["fraction"].sub(
        lambda m: nw.fraction(int(m[1]), int(m[2]), loc.tag, loc.d), text)


def _ranges(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        a, b = nw.plain(m["a"], loc.tag), nw.plain(m["b"], loc.tag)
        word = loc.w["to"]
        if m["s1"] and m["s2"] and m["dash"] == "-":  # 10 - 5: a subtraction
            word = loc.w["minus_op"]
        if loc.lang == "en" and _years(a) and _years(b):
            return _glue(m, f"{nw.year(int(a), loc.tag)} {word} {nw.year(int(b), loc.tag)}")
        return _glue(m, f"{nw.number(a, loc.tag)} {word} {nw.number(b, loc.tag)}")

    return loc.res["range"].sub(replace, text)


def _long_digits(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        if _ROUND.fullmatch(m[0]):
            return _glue(m, nw.cardinal(int(m[0]), loc.tag))
        return _glue(m, nw.digits(m[0], loc.tag))

    return _LONG_DIGITS.sub(replace, text)


def _noun_gender(m: Match, loc: _Loc) -> Gender:
    """Spanish and French numbers agree with the noun after them: "un peso", "una hora",
    "une heure"; a number not followed by a noun is read as counted ("uno", "un")."""
    after = re.match(r"\s+([^\W\d_]+)", m.string[m.end():])
    before = m.string[: m.start()].rstrip()
    if loc.lang not in ("es", "fr") or not after or not after[1].islower() or before.endswith(
            loc.w["number"]):  # número uno
        return ""
    word = after[1]
    if word in loc.d["not_nouns"]:
        return ""
    return "f" if word in loc.feminine else "m"


def _numbers(text: str, loc: _Loc) -> str:
    def replace(m: Match) -> str:
        sign = {"+": loc.w["plus"] + " ", None: ""}.get(m["sign"], nw.minus_word(loc.tag) + " ")
        return _glue(m, sign + nw.number(nw.plain(m["n"], loc.tag), loc.tag, _noun_gender(m, loc)))

    text = loc.res["number"].sub(replace, text)
    return _FALLBACK.sub(lambda m: _glue(m, nw.cardinal(int(m[0]), loc.tag)), text)


def _symbols(text: str, loc: _Loc) -> str:
    text = loc.res["per"].sub(f" {loc.w['per']} ", text)
    for pattern, replacement in _SYMBOLS:
        text = pattern.sub(replacement.format_map(loc.w), text)
    return _ELISION.sub(r"\1'\2", text) if loc.lang == "fr" else text  # de un -> d'un


# Passes in order; the ones after _word_scores only look at digits, and no pass adds one,
# so they are skipped once none is left.
_PASSES: tuple[Callable[[str, _Loc], str], ...] = (
    _addresses, _abbreviations, _word_scores, _dates, _scores, _times, _versions, _phones,
    _money,
    _percent, _decades, _units, _ordinals, _year_cues, _fractions, _ranges, _long_digits,
    _numbers,
)


def normalize(text: str, locale: str) -> str:
    """``text`` as a TTS engine should read it in ``locale`` (one of ``LOCALES``): every
    pattern spelled in words, whitespace collapsed, no digits left. Raises ValueError
    for an unknown locale."""
    loc = _locale(locale)
    text = text.translate(_PLAIN)
    for i, step in enumerate(_PASSES):
        if i < 3 or _DIGIT.search(text):
            text = step(text, loc)
    return _SPACES.sub(" ", _symbols(text, loc)).strip()

"""Numbers as words for the voice locales: a thin wrapper over ``unicode_rbnf``.

Every function takes a voice locale tag (``"en-US"``, ``"en-GB"``, ``"en-IN"``,
``"hi-IN"``, ``"es-MX"``, ``"fr-FR"``) and returns words only, never digits. The CLDR
rule sets behind them are:

- en-US: ``en``; en-GB: ``en`` "verbose" ("one hundred and five"); en-IN: ``en_IN``
  (lakh and crore); hi-IN: ``hi``; es-MX: ``es``; fr-FR: ``fr``.
- ``gender`` is ``""`` for counting ("uno", "veintiuno"), ``"m"`` or ``"f"`` before a
  noun of that gender ("un peso", "veintiún pesos", "una hora", "vingt-et-une heures");
  English and Hindi ignore it.

The second half builds the spoken forms of values made of numbers (clock times, dates,
money amounts, fractions) from a locale's word tables (``data/speech_*.yaml``, loaded
and passed in by :mod:`kathan.voice.normalize` as ``tables``).

Engines are built once per language, lazily; spelled numbers are memoised.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Mapping
from typing import Any, Literal

from unicode_rbnf import RbnfEngine
from unicode_rbnf.engine import RbnfError

Gender = Literal["", "m", "f"]
Tables = Mapping[str, Any]

_LANGUAGE = {
    "en-US": "en",
    "en-GB": "en",
    "en-IN": "en_IN",
    "hi-IN": "hi",
    "es-MX": "es",
    "fr-FR": "fr",
}
_POINT = {"en": "point", "es": "punto", "fr": "virgule", "hi": "दशमलव"}
_MINUS = {"en": "minus", "es": "menos", "fr": "moins", "hi": "माइनस"}
_STRIP = str.maketrans("", "", " \u00a0\u202f")
# Above this, numbers are read digit by digit (the CLDR rules stop at quadrillions).
_MAX_SPELLED = 10**15


def _lang(locale: str) -> str:
    try:
        return _LANGUAGE[locale]
    except KeyError:
        raise ValueError(f"unsupported voice locale: {locale!r}") from None


@functools.cache
def _engine(language: str) -> RbnfEngine:
    return RbnfEngine.for_language(language)


@functools.lru_cache(maxsize=8192)
def _spell(language: str, ruleset: str, n: int) -> str:
    text = _engine(language).format_number(n, ruleset_names=[ruleset]).text
    return " ".join(text.replace(",", " ").split())


def minus_word(locale: str) -> str:
    """The word for a minus sign: "minus", "menos", "moins", "माइनस"."""
    return _MINUS[_lang(locale)[:2]]


def point_word(locale: str) -> str:
    """The word for a decimal separator: "point", "punto", "virgule", "दशमलव"."""
    return _POINT[_lang(locale)[:2]]


def plain(written: str, locale: str) -> str:
    """A number as written in ``locale`` ("1,234.5", "1 234,5", "12,34,567", "-3,50" after
    a currency sign) as ``[-]digits[.digits]``."""
    s = written.translate(_STRIP).replace("−", "-")
    if "," in s and "." in s:  # 1,234.50 or 1.234,50: the last one is the decimal point
        point = max(s.rfind(","), s.rfind("."))
        return s[:point].replace(",", "").replace(".", "") + "." + s[point + 1:]
    if s.count(",") == 1 and (_lang(locale) == "fr" or len(s) - s.index(",") <= 3):
        return s.replace(",", ".")  # French decimal comma; 3,50 (never a thousands group)
    return s.replace(",", "")


def digits(text: str, locale: str) -> str:
    """Each digit of ``text`` as a word ("0042" -> "zero zero four two"); non-digits
    are dropped."""
    lang = _lang(locale)
    return " ".join(_spell(lang, "spellout-numbering", int(c)) for c in text if c.isdigit())


def cardinal(n: int, locale: str, gender: Gender = "") -> str:
    """``n`` as a cardinal: 1234567 -> "one million two hundred thirty-four thousand
    five hundred sixty-seven" (en-IN: "twelve lakh thirty-four thousand ...")."""
    lang = _lang(locale)
    if n < 0:
        return f"{_MINUS[lang[:2]]} {cardinal(-n, locale, gender)}"
    if n >= _MAX_SPELLED:
        return digits(str(n), locale)
    ruleset = "spellout-numbering"
    if locale == "en-GB":
        ruleset = "spellout-numbering-verbose"
    elif gender and lang in ("es", "fr"):
        ruleset = "spellout-cardinal-masculine" if gender == "m" else "spellout-cardinal-feminine"
    try:
        return _spell(lang, ruleset, n)
    except RbnfError:  # pragma: no cover - every n below _MAX_SPELLED has a rule
        return digits(str(n), locale)


def _fraction(frac: str, locale: str) -> str:
    lang = _lang(locale)[:2]
    if lang in ("es", "fr") and len(frac) <= 2 and frac.strip("0"):
        # Spanish and French read a short fraction as a number: "tres punto catorce",
        # "douze virgule zéro cinq".
        zeros = len(frac) - len(frac.lstrip("0"))
        return " ".join([digits("0", locale)] * zeros + [cardinal(int(frac), locale)])
    return digits(frac, locale)


def decimal(integer: int, frac: str, locale: str) -> str:
    """A decimal number from its integer part and fraction digits:
    (3, "14") -> "three point one four" / "tres punto catorce" / "तीन दशमलव एक चार"."""
    words = cardinal(integer, locale)
    if not frac:
        return words
    return f"{words} {point_word(locale)} {_fraction(frac, locale)}"


def number(value: str, locale: str, gender: Gender = "") -> str:
    """A plain number written with ASCII digits, an optional leading ``-`` and an optional
    ``.`` decimal point ("-12.5") as words. Integers take ``gender``."""
    negative = value.startswith("-")
    integer, _, frac = value.lstrip("-").partition(".")
    if frac:
        words = decimal(int(integer or "0"), frac, locale)
    else:
        words = cardinal(int(integer), locale, gender)
    return f"{minus_word(locale)} {words}" if negative else words


def phone(groups: list[str], locale: str) -> str:
    """Digit groups of a phone number, a comma between groups: "five five five, one two
    three"; French reads groups of two as numbers ("zéro un, vingt-trois")."""
    spoken = []
    for g in groups:
        if _lang(locale) == "fr" and len(g) <= 2:
            zero = digits("0", locale) + " " if len(g) == 2 and g[0] == "0" else ""
            spoken.append(zero + cardinal(int(g), locale))
        else:
            spoken.append(digits(g, locale))
    return ", ".join(spoken)


def ordinal(n: int, locale: str, gender: Gender = "m", form: str = "") -> str:
    """``n`` as an ordinal: "twenty-first", "primero"/"primera", "premier"/"première",
    "पहला"/"पहली". ``form``: ``"adjective"`` (es: "primer", "tercer" before a masculine
    noun), ``"plural"`` (es, fr), ``"oblique"`` (hi: "पाँचवें")."""
    lang = _lang(locale)
    if n >= _MAX_SPELLED or n < 0:
        return cardinal(n, locale)
    if lang.startswith("en"):
        return _spell(lang, "spellout-ordinal", n)
    fem = gender == "f"
    if lang == "hi":
        word = _spell(lang, "spellout-ordinal-masculine", n)
        if fem:
            word = word[:-2] + "ीं" if word.endswith("ाँ") else word[:-1] + "ी"
        elif form == "oblique":
            word = word[:-2] + "ें" if word.endswith("ाँ") else word[:-1] + "े"
        return word
    ruleset = "spellout-ordinal-" + ("feminine" if fem else "masculine")
    if form == "adjective" and lang == "es" and not fem:
        ruleset += "-adjective"
    elif form == "plural":
        ruleset += "-plural"
    return _spell(lang, ruleset, n)


def year(n: int, locale: str) -> str:
    """``n`` as a year: English pairs the digits ("nineteen ninety-nine", "twenty
    twenty-four", "two thousand five"; en-GB "two thousand and five"); Hindi says hundreds
    before 2000 ("उन्नीस सौ सैंतालीस") and the cardinal after ("दो हज़ार चौबीस"); Spanish
    and French read the cardinal ("mil novecientos noventa y nueve")."""
    lang = _lang(locale)
    if lang == "hi" and 1100 <= n < 2000 and n % 1000:
        rest = f" {cardinal(n % 100, locale)}" if n % 100 else ""
        return f"{cardinal(n // 100, locale)} सौ{rest}"
    if not lang.startswith("en") or not 1000 <= n < 10000:
        return cardinal(n, locale)
    if locale == "en-GB" and 2000 < n < 2010:
        return cardinal(n, locale)
    return _spell(lang, "spellout-numbering-year", n).replace("oh-", "oh ")


# --- spoken forms built from numbers and word tables ----------------------------------------


def singular(plain: str, locale: str) -> bool:
    """Whether a noun after the number ``plain`` ("-1.5") takes its singular: only 1 in
    English ("1.0 km" is plural), 1 and -1 in Spanish and Hindi, below 2 in French."""
    value = abs(float(plain))
    lang = _lang(locale)[:2]
    if lang == "fr":
        return value < 2
    return plain.lstrip("-") == "1" or (lang != "en" and value == 1)


def date(day: int | None, month: int, year: int | None, locale: str, tables: Tables
         ) -> str | None:
    """A date in the locale's spoken form ("March fifteenth, twenty twenty-four"), from
    the ``date`` and ``months`` tables; ``None`` when it is no valid date."""
    if not 1 <= month <= 12:
        return None
    fmt = tables["date"]
    name = tables["months"][month - 1]
    if day is None:
        return str(fmt["month_year"]).format(month=name, year=_year_or_blank(year, locale))
    if not 1 <= day <= calendar.monthrange(year or 2000, month)[1]:
        return None
    if fmt["day"] == "ordinal":
        spoken = ordinal(day, locale)
    else:
        spoken = fmt["first"] if day == 1 and "first" in fmt else cardinal(day, locale)
    template = fmt["with_year" if year is not None else "without_year"]
    return str(template).format(day=spoken, month=name, year=_year_or_blank(year, locale))


def decade(n: int, locale: str) -> str:
    """A decade: 1990 -> "nineteen nineties", 80 -> "eighties" (es "ochentas")."""
    words = year(n, locale) if n > 100 else cardinal(n, locale)
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _year_or_blank(n: int | None, locale: str) -> str:
    return "" if n is None else year(n, locale)


def clock(hour: int, minute: int, known: bool, locale: str, tables: Tables) -> str:
    """A time of day from the ``time`` table. ``known``: the period of the day is known
    (AM/PM or a 24-hour time), then ``hour`` is 0-23 and the period is said."""
    t = tables["time"]
    lang = _lang(locale)[:2]
    h12 = hour % 12 or 12
    periods = [p for start, p in t.get("periods", []) if hour >= start]
    period = str(periods[-1]) if periods else ""
    if lang == "fr":  # 24-hour: quinze heures quarante-cinq, midi, minuit
        if hour in (0, 12):
            words = t["midnight"] if hour == 0 else t["noon"]
        else:
            words = f"{cardinal(hour, locale, 'f')} {t['hour'][0 if hour == 1 else 1]}"
        return f"{words} {cardinal(minute, locale, 'f')}" if minute else str(words)
    if lang == "en":
        if known and minute == 0 and hour in (0, 12):
            return str(t["midnight"] if hour == 0 else t["noon"])
        mins = f" {t['oh']}" if 0 < minute < 10 else ""
        mins += f" {cardinal(minute, locale)}" if minute else ""
        if not known:
            return f"{cardinal(h12, locale)}{mins or ' ' + t['oclock']}"
        return f"{cardinal(h12, locale)}{mins} {period}"
    if lang == "es":
        mins = {0: "", 15: f" y {t['quarter']}", 30: f" y {t['half']}"}.get(
            minute, f" y {cardinal(minute, locale)}")
        tail = f" {period}" if known else ("" if minute else f" {t['oclock']}")
        return f"{cardinal(h12, locale, 'f')}{mins}{tail}"
    # Hindi: सवा / साढ़े / पौने / डेढ़ / ढाई, else "तीन बजकर दस मिनट".
    h = cardinal(h12, locale)
    if minute in (0, 15, 30, 45):
        special = {1: t["one_thirty"], 2: t["two_thirty"]}.get(h12) if minute == 30 else None
        words = {0: h, 15: f"{t['quarter_past']} {h}", 30: special or f"{t['half_past']} {h}",
                 45: f"{t['quarter_to']} {cardinal(h12 % 12 + 1, locale)}"}[minute]
        words += f" {t['oclock']}"
    else:
        words = f"{h} {t['past']} {cardinal(minute, locale)} {t['minute']}"
    return f"{period} {words}" if known else str(words)


def money(amount: str, code: str, locale: str, tables: Tables, scale: str | None = None) -> str:
    """A money amount ``amount`` ("-1250.5") in currency ``code`` from the ``currencies``
    table: "one thousand two hundred fifty dollars and fifty cents". ``scale`` is a scale
    abbreviation from the ``scales`` table ("M") or a scale word ("million")."""
    one, many, minor_one, minor_many, *rest = tables["currencies"][code]
    gender: Gender = "f" if rest and rest[0] == "f" else "m"
    w = tables["words"]
    plain = amount.lstrip("-")
    minus = minus_word(locale) + " " if amount.startswith("-") else ""
    integer, _, frac = plain.partition(".")
    # 1.5 million dollars, 1.505 dollars, 2.5 yen (a currency without minor units in use)
    if scale or len(frac) > 2 or (frac and not minor_one):
        unit = one if singular(plain, locale) and not scale else many
        if scale in tables["scales"]:
            scale = tables["scales"][scale][0 if singular(plain, locale) else 1]
        words = number(plain, locale, "" if frac else gender) + (f" {scale}" if scale else "")
    else:
        value, cents = int(integer or 0), int(frac.ljust(2, "0")) if frac else 0
        words = cardinal(value, locale, gender)
        unit = one if singular(integer or "0", locale) else many
        minor = f"{cardinal(cents, locale, 'm')} {minor_one if cents == 1 else minor_many}"
        if cents and not value:
            return minus + minor
        if cents and _lang(locale) == "fr":  # trois euros cinquante
            return f"{minus}{words} {unit} {cardinal(cents, locale, 'm')}"
        if cents:
            unit += f" {w['currency_and']} {minor}"
    if words.split()[-1] in tables.get("scales_of", []):  # un millón de pesos, d'euros
        vowel = "of_vowel" in w and unit[0] in "aeiouéèh"
        unit = w["of_vowel"] + unit if vowel else f"{w['of']} {unit}"
    return f"{minus}{words} {unit}"


def fraction(numerator: int, denominator: int, locale: str, tables: Tables) -> str:
    """A fraction: "three quarters", "dos tercios", "un demi", "तीन चौथाई"; named by the
    ``fractions`` table or, up to tenths, by the ordinal ("three fifths"); otherwise
    "five over sixteen" ("sobre", "sur", "बटा")."""
    special = tables["fraction_special"].get(f"{numerator}/{denominator}")
    if special:
        return str(special)
    lang = _lang(locale)[:2]
    named = tables["fractions"].get(denominator)
    many = numerator != 1
    if named:
        name = named[1 if many else 0]
    elif 3 <= denominator <= 10 and lang != "hi":
        name = ordinal(denominator, locale, "m", "plural" if many and lang != "en" else "")
        name += "s" if many and lang == "en" else ""
    else:
        over = tables["words"]["over"]
        return f"{cardinal(numerator, locale)} {over} {cardinal(denominator, locale)}"
    return f"{cardinal(numerator, locale, 'm')} {name}"

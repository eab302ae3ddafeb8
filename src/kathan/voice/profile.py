"""Which voice a request asks for: language, accent, gender, and the locale whose
speech rules apply. The supported values live in ``data/voices.yaml``.

Voice mode is on when a request sets ``finetune: true`` or any of ``language``,
``gender`` and ``accent``: those three are honoured with or without
``finetune`` (a caller who names a language wants it spoken). A request with
none of them takes the normal path, untouched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Voice:
    """A resolved voice. ``gender`` is None when the request named none."""

    language: str
    accent: str
    gender: str | None
    locale: str  # e.g. "en-GB": the speech shaper's rules
    finetune: bool = False  # the request asked for the model's voice variant


@dataclass(frozen=True, slots=True)
class _Catalog:
    genders: tuple[str, ...]
    accents: dict[str, dict[str, str]]  # language -> accent -> locale
    names: dict[str, str]  # language -> its name in English


@functools.cache
def _catalog() -> _Catalog:
    raw: dict[str, Any] = yaml.safe_load(
        resources.files("kathan.voice").joinpath("data/voices.yaml").read_text("utf-8"))
    return _Catalog(
        genders=tuple(raw["genders"]),
        accents={lang: dict(spec["accents"]) for lang, spec in raw["languages"].items()},
        names={lang: str(spec.get("name", lang)) for lang, spec in raw["languages"].items()},
    )


def catalog() -> list[tuple[str, str, dict[str, str]]]:
    """(language code, its name, its accents with their locales), in the file's order."""
    c = _catalog()
    return [(lang, c.names[lang], dict(table)) for lang, table in c.accents.items()]


def languages() -> tuple[str, ...]:
    return tuple(_catalog().accents)


def genders() -> tuple[str, ...]:
    return _catalog().genders


@functools.cache
def accents() -> tuple[str, ...]:
    """Every accent of every language, each once, in the file's order."""
    return tuple(dict.fromkeys(a for table in _catalog().accents.values() for a in table))


def describe() -> str:
    """What is supported, for error messages: "en (american, british, indian), hi (...)"."""
    return ", ".join(f"{lang} ({', '.join(table)})" for lang, table in _catalog().accents.items())


def check_language(value: str) -> str:
    if value not in _catalog().accents:
        raise ValueError(
            f"Unsupported language '{value}'. Supported languages (with their accents): "
            f"{describe()}.")
    return value


def check_accent(value: str) -> str:
    if value not in accents():
        raise ValueError(
            f"Unsupported accent '{value}'. Supported accents: {', '.join(accents())} "
            f"(by language: {describe()}).")
    return value


def check_pair(language: str | None, accent: str | None) -> None:
    """An accent must belong to the language (when both are given)."""
    if language is None or accent is None:
        return
    table = _catalog().accents.get(language, {})
    if table and accent not in table:
        raise ValueError(
            f"Accent '{accent}' is not available for language '{language}'; "
            f"{language} supports: {', '.join(table)}.")


def voice_of(
    finetune: bool | None, language: str | None, gender: str | None, accent: str | None
) -> Voice | None:
    """The voice a request asks for, or None for the normal path.

    Values are assumed checked (the request model does). A language without an
    accent takes the language's first; an accent without a language takes the
    first language that has it (``indian`` alone is Indian English).

    >>> voice_of(True, "es", "female", None)
    Voice(language='es', accent='mexican', gender='female', locale='es-MX', finetune=True)
    >>> voice_of(None, None, None, None) is None
    True
    """
    if not finetune and language is None and gender is None and accent is None:
        return None
    table = _catalog().accents
    if language is None:
        language = next((lang for lang, t in table.items() if accent in t), next(iter(table)))
    if accent is None:
        accent = next(iter(table[language]))
    return Voice(language, accent, gender, table[language][accent], bool(finetune))

"""Settings for the ``kathan`` command: loaded with one-line errors, and listed.

``load_settings`` turns every way a configuration can be wrong (a missing file,
a file that is not YAML, a value that fails validation, an unknown setting)
into a ``ConfigFault`` whose message is one line naming where the value came
from, the setting's path and the reason, e.g.
``kathan.yaml: models[0].deployments[0].base_url: a openai deployment needs base_url``.

``setting_docs`` lists every setting (nested ones by their dotted path) from
the ``Settings`` model itself, for ``kathan config settings`` and ``serve --help``.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined
from pydantic_settings import SettingsError

from kathan.settings import LOCAL_FORMS, Settings

ENV_PREFIX = "KATHAN_"


class ConfigFault(Exception):
    """The configuration cannot be used; the message is one line."""


def load_settings(overrides: Mapping[str, object] | None = None,
                  flags: Mapping[str, str] | None = None) -> Settings:
    """``Settings`` from ``overrides`` (the CLI's flags), the environment and the config
    file, or a ``ConfigFault``. ``flags`` names the flag each override came from."""
    given = dict(overrides or {})
    path = given.get("config_file") or os.environ.get(ENV_PREFIX + "CONFIG_FILE")
    shown = str(path) if path else "settings"
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise ConfigFault(f"{shown}: no such config file") from None
    except IsADirectoryError:
        raise ConfigFault(f"{shown}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigFault(f"{shown}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigFault(f"{shown}: is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigFault(f"{shown}: not valid YAML: {_yaml_reason(exc)}") from None
    except ValidationError as exc:
        raise ConfigFault(_validation_line(exc, given, flags or {}, shown)) from None
    except SettingsError as exc:  # an environment variable that is not valid JSON, ...
        raise ConfigFault(_one_line(str(exc))) from None
    except ValueError as exc:  # the config source's own checks (the top level, ...)
        raise ConfigFault(_one_line(str(exc))) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{exc.problem or exc.context or 'cannot be parsed'}{where}"
    return _one_line(str(exc))


def setting_path(loc: Sequence[int | str]) -> str:
    """``("models", 0, "base_url")`` as ``models[0].base_url``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _validation_line(exc: ValidationError, given: Mapping[str, object],
                     flags: Mapping[str, str], config: str) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(part for part in first["loc"] if part not in LOCAL_FORMS)
    top = str(loc[0]) if loc else ""
    if top in given and top != "config_file":
        source = flags.get(top, top)
    elif top and (ENV_PREFIX + top.upper()) in os.environ:
        source = ENV_PREFIX + top.upper()
    else:
        source = config
    if first["type"] == "extra_forbidden":
        reason = "unknown setting" + _did_you_mean(loc)
    else:
        reason = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {setting_path(loc) or 'the top level'}: {reason}{more}"


def _did_you_mean(loc: Sequence[int | str]) -> str:
    model = _model_at(loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class whose fields are at ``loc`` inside ``Settings``."""
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: the list's model, already found
        field = model.model_fields.get(part)
        nested = _nested_model(field.annotation) if field is not None else None
        if nested is None:
            return None
        model = nested
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``annotation`` (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _nested_model(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


# The listing


@dataclass(frozen=True)
class SettingDoc:
    path: str  # e.g. "local.n_ctx", "models[].deployments[].base_url"
    env: str | None  # the environment variable (top-level settings only)
    default: str
    description: str


def setting_docs() -> list[SettingDoc]:
    """Every setting, top-level ones first, each followed by what it contains."""
    return list(_docs(Settings, "", top=True))


def _docs(model: type[BaseModel], prefix: str, *, top: bool) -> Iterator[SettingDoc]:
    for name, field in model.model_fields.items():
        path = prefix + name
        nested = _nested_model(field.annotation)
        is_list = typing.get_origin(field.annotation) is list or list in (
            typing.get_origin(arg) for arg in typing.get_args(field.annotation))
        yield SettingDoc(
            path=path,
            env=ENV_PREFIX + name.upper() if top else None,
            default=_default(field, nested is not None and not is_list),
            description=_one_line(field.description or (
                nested.__doc__ or "" if nested is not None else "")),
        )
        if nested is not None:
            yield from _docs(nested, path + ("[]." if is_list else "."), top=False)


def _default(field: Any, nested: bool) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if nested:
        return "see below"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home):] if text.startswith(home + os.sep) else text
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


def settings_table() -> str:
    """``kathan config settings``: every setting with its variable, default and meaning."""
    docs = setting_docs()
    rows = [("SETTING", "ENVIRONMENT", "DEFAULT", "MEANING")]
    rows += [(d.path, d.env or "-", d.default, d.description) for d in docs]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  " + row[3] for row in rows
    ).rstrip() + "\n"


def serve_epilog() -> str:
    """``serve --help``'s pointer to every setting: the top-level ones by name and variable."""
    top = [d for d in setting_docs() if d.env is not None and d.path != "config_file"]
    names = ", ".join(d.path for d in top)
    nested = sorted({d.path.split(".")[0].split("[")[0] for d in setting_docs()
                     if d.env is None})
    return (
        f"Every setting ({len(setting_docs())} in all) can be given in the --config YAML "
        "file, and each top-level one as an environment variable KATHAN_<NAME> (the "
        "environment wins over the file, flags win over both). Top-level settings: "
        f"{names}. Nested ones (in the file): " + ", ".join(n + ".*" for n in nested) +
        ". `kathan config settings` lists them all with their variable, default and "
        "meaning; `kathan config check FILE` validates a file."
    )

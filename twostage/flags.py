"""CLI flags that mirror a pydantic-settings class: --recall-k ⇔ TWOSTAGE_RECALL_K, same types (a
grouped setting keeps its flat name: `recall_k` lives in `Settings.recall` and is still --recall-k)."""

from __future__ import annotations

import argparse

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings


def flat_fields(settings_cls: type[BaseSettings]) -> dict[str, tuple[type[BaseSettings], FieldInfo]]:
    """Every setting by its flat name, with the class that reads its env var."""
    groups = getattr(settings_cls, "GROUPS", {})
    own = {name: (settings_cls, f) for name, f in settings_cls.model_fields.items() if name not in groups}
    return own | {name: (group, f) for group in groups.values() for name, f in group.model_fields.items()}


def add_settings_flags(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings], exclude=()) -> None:
    for name, (owner, field) in flat_fields(settings_cls).items():
        if name in exclude:
            continue
        env = " or ".join(env_names(owner, name))
        help_text = f"{field.description or ''} (env {env}; default {field.default})"
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)


def settings_from_args(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings], args):
    """Flags given on the command line win over env vars, which win over defaults."""
    names = flat_fields(settings_cls)
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    try:
        return settings_cls(**overrides)
    except ValidationError as error:
        problems = "; ".join(f"--{_flag(e['loc'])}: {e['msg']}" for e in error.errors())
        parser.error(problems)


def _flag(loc: tuple) -> str:
    """A validation error's place as the flag that sets it (a group's field is named alone; a list's item
    by its list)."""
    names = [part for part in loc if isinstance(part, str)]
    return (names[-1] if names else "settings").replace("_", "-")


def env_names(settings_cls: type[BaseSettings], name: str) -> list[str]:
    """The environment variables a setting reads: its aliases (ARTIFACTS_DIR), else prefix + NAME."""
    field = settings_cls.model_fields[name]
    aliases = getattr(field.validation_alias, "choices", None)
    if aliases:
        return [a for a in aliases if isinstance(a, str) and a.isupper()]
    return [f"{settings_cls.model_config.get('env_prefix', '')}{name.upper()}"]

"""CLI flags that mirror a pydantic-settings class: --recall-k ⇔ TWOSTAGE_RECALL_K, same types."""

from __future__ import annotations

import argparse

from pydantic import ValidationError
from pydantic_settings import BaseSettings


def add_settings_flags(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings], exclude=()) -> None:
    for name, field in settings_cls.model_fields.items():
        if name in exclude:
            continue
        env = " or ".join(env_names(settings_cls, name))
        help_text = f"{field.description or ''} (env {env}; default {field.default})"
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)


def settings_from_args(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings], args):
    """Flags given on the command line win over env vars, which win over defaults."""
    overrides = {k: v for k, v in vars(args).items() if k in settings_cls.model_fields and v is not None}
    try:
        return settings_cls(**overrides)
    except ValidationError as error:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in error.errors())
        parser.error(problems)


def env_names(settings_cls: type[BaseSettings], name: str) -> list[str]:
    """The environment variables a setting reads: its aliases (ARTIFACTS_DIR), else prefix + NAME."""
    field = settings_cls.model_fields[name]
    aliases = getattr(field.validation_alias, "choices", None)
    if aliases:
        return [a for a in aliases if isinstance(a, str) and a.isupper()]
    return [f"{settings_cls.model_config.get('env_prefix', '')}{name.upper()}"]

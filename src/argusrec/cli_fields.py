"""Every config field is a command-line flag: `--optim.lr 3e-4`, `--model.d_model 128`,
`--checkpoint-every 100`.

A verb's named flags (`--lr`, `--max-len`) are shortcuts for the common fields; each names the
field it sets (:func:`shortcuts_epilog`). Any other field of the verb's config is given by its
dotted path, in the order the config nests it (litgpt's `--train.micro_batch_size` style).
:class:`FieldFlagsCommand` takes such flags out of the arguments before click parses the rest,
so they may stand anywhere on the line; :func:`field_values` checks them against the config's
fields (a typo gets the nearest field) and reads each value as YAML (`true`, `[64, 128]`,
`null`). `argus config VERB` prints the config as a commented YAML file to start from.

Nothing here imports torch: the config classes are passed in by the verb that needs them.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

import typer
import typer.core
import yaml
from pydantic import BaseModel

_FIELDS_KEY = "argusrec.field_flags"

# The usage error of the click that typer runs on (recent typers vendor their own click, so
# the `click` package's error would not be caught and shown as one).
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class FieldFlagsCommand(typer.core.TyperCommand):
    """A command whose unknown `--name VALUE` / `--name=VALUE` arguments are config fields."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        declared = {opt for param in self.get_params(ctx) for opt in
                    (*param.opts, *param.secondary_opts)}
        rest: list[str] = []
        fields: list[tuple[str, str]] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                rest += args[i:]
                break
            name, eq, value = arg.partition("=")
            if not arg.startswith("--") or len(arg) == 2 or name in declared:
                rest.append(arg)
                i += 1
                continue
            if not eq:
                if i + 1 == len(args) or args[i + 1].startswith("--"):
                    raise UsageError(f"{name} needs a value: {name} VALUE or "
                                           f"{name}=VALUE", ctx=ctx)
                value = args[i + 1]
                i += 1
            fields.append((name[2:], value))
            i += 1
        ctx.meta[_FIELDS_KEY] = fields
        return super().parse_args(ctx, rest)


def field_paths(config: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every settable field of ``config`` by dotted path, nested configs walked (their own
    path is not settable whole from a flag); the value is the pydantic FieldInfo."""
    out: dict[str, Any] = {}
    for name, field in config.model_fields.items():
        nested = _config_class(field.annotation)
        if nested is not None:
            out.update(field_paths(nested, f"{prefix}{name}."))
        else:
            out[prefix + name] = field
    return out


def _config_class(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class of a field's type (``X`` or ``X | None``), else None."""
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def field_values(ctx: typer.Context, config: type[BaseModel],
                 shortcuts: dict[str, str] | None = None) -> dict[str, Any]:
    """The config fields given as flags, by dotted path, their values read as YAML.

    A name that is no field of ``config`` is a usage error naming the nearest fields (or the
    shortcut flag of that field); a flag's dashes may stand for underscores."""
    paths = field_paths(config)
    flag_of = {field: flag for flag, field in (shortcuts or {}).items()}
    out: dict[str, Any] = {}
    for raw, text in ctx.meta.get(_FIELDS_KEY, []):
        name = ".".join(part.replace("-", "_") for part in raw.split("."))
        if name not in paths:
            raise UsageError(_unknown(ctx, raw, name, paths, flag_of, shortcuts or {}),
                             ctx=ctx)
        out[name] = _value(text)
    return out


def _value(text: str) -> Any:
    """A flag's value: lists, mappings and null read as YAML; anything else stays text for
    pydantic to convert to the field's type (so `1e-3` is a float and `007` a string where
    the field wants one)."""
    if text.strip()[:1] in "[{" or text.strip().lower() in ("null", "none", "~"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def _unknown(ctx: typer.Context, raw: str, name: str, paths: dict[str, Any], flag_of: dict[str, str],
             shortcuts: dict[str, str]) -> str:
    near = difflib.get_close_matches(name, list(paths), n=3, cutoff=0.6)
    near_flags = difflib.get_close_matches(f"--{raw}", list(shortcuts), n=2, cutoff=0.7)
    hints = [flag for flag in near_flags if shortcuts[flag] not in near] + [
        f"--{p}" + (f" (or {flag_of[p]})" if p in flag_of else "") for p in near]
    hint = f"; did you mean {' or '.join(dict.fromkeys(hints))}?" if hints else ""
    return (f"no such option or config field: --{raw}{hint} `argus config "
            f"{ctx.info_name}` lists every field")


def merge_flags(ctx: typer.Context, named: dict[str, Any], fields: dict[str, Any]) -> dict:
    """Named flags and field flags together; the same field given both ways is a usage
    error."""
    for name in sorted(named.keys() & fields.keys()):
        raise UsageError(f"--{name} is set twice, by its own flag and by a named one; keep "
                         "one", ctx=ctx)
    return {**named, **fields}


def shortcuts_epilog(shortcuts: dict[str, str]) -> str:
    """The --help epilog: which field each named flag sets, and how to set any other."""
    text = ("Every config field is also a flag, by its dotted path (--optim.lr 3e-4, "
            "--model.d_model 128); `argus config VERB` lists them.")
    if shortcuts:
        text += " The named flags set: " + ", ".join(
            f"{flag} = {field}" for flag, field in shortcuts.items()) + "."
    return text


def config_template(config: BaseModel, title: str, notes: tuple[str, ...] = ()) -> str:
    """``config`` as YAML with each field's description as a comment: a file to edit and pass
    back with --config."""
    lines = [f"# {title}", "# Every field is also a command-line flag: --section.field VALUE.",
             *(f"# {note}" for note in notes)]
    _template_lines(config, 0, lines)
    return "\n".join(lines) + "\n"


def _template_lines(config: BaseModel, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        note = f"  # {field.description}" if field.description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{note}")
            _template_lines(value, depth + 1, lines)
            continue
        dumped = config.model_dump(mode="json", include={name})[name]
        if isinstance(dumped, dict) and not dumped:
            text = "{}"
        else:
            text = yaml.safe_dump(dumped, default_flow_style=True, width=10**6).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{pad}{name}: {text}{note}")

"""YAML loading into strict pydantic schemas, with errors that name the file, the line and the key.

Schemas live next to the code that uses them (data/schema.py, train/schema.py, eval/schema.py,
pipeline.py); they all derive from `Strict`, so an unknown or misspelled key is always an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rualign.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for every config schema: unknown keys are errors, defaults live here, not at call sites."""

    # allow_inf_nan=False: `.inf` and `.nan` pass every gt/ge bound (inf > 0, nan compares false), so
    # `epochs: .inf` or `weight: .nan` would reach the trainer; a config number is always finite.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)


# A seed every consumer accepts: numpy's legacy seeding (transformers.set_seed) needs 0 <= seed < 2**32.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


# Validators shared by the stage schemas (judge, generation, training), defined once and attached with
# `_name = field_validator("key")(validator)`.

def env_var_name(value: str | None) -> str | None:
    """An `api_key_env` value: the NAME of an environment variable. A pasted key in its place would end up in
    manifests, so it is refused early."""
    if value is not None and (not value.replace("_", "").isalnum() or value.startswith(("sk-", "Bearer"))):
        raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
    return value


def table_key(table: Mapping[str, Any] | Callable[[], Mapping[str, Any]], what: str) -> Callable[[str], str]:
    """A validator: the value names a row of an extension table (a callable returns a table imported lazily)."""
    def check(value: str) -> str:
        rows = table() if callable(table) else table
        if value not in rows:
            raise ValueError(f"unknown {what} '{value}' (expected one of {', '.join(rows)})")
        return value
    return check


def missing_needs(config: BaseModel, needs: Iterable[str]) -> list[str]:
    """The keys a table row needs (e.g. a backend's base_url) that `config` leaves unset or empty."""
    return [key for key in needs if getattr(config, key) in (None, "")]


def key_line(node: yaml.Node | None, loc: tuple[Any, ...], *, nearest: bool = False) -> int | None:
    """The line of the key (or list item) at `loc` in a YAML node tree: the one YAML line locator.

    When the file lacks `loc` (a missing key, a value from defaults): None, or with `nearest` the line of
    the deepest part of `loc` it does have, so an error still points close to its cause.
    """
    def fallback() -> int | None:
        return node.start_mark.line + 1 if nearest and node is not None else None

    for index, key in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
            if pair is None:
                return fallback()
            if index == len(loc) - 1:
                return pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
        else:
            return fallback()
    return node.start_mark.line + 1 if node is not None else None


def describe_error(error: dict) -> str:
    """One pydantic error as people read it: the dotted key and what is wrong with it."""
    loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{loc}'"
    if error["type"] == "missing":
        return f"missing required key '{loc}'"
    return f"'{loc}': {error['msg'].removeprefix('Value error, ')}"


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last silently, so a
    second `sources:` would drop the first list)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_yaml_text(text: str, path: str | Path) -> tuple[Any, yaml.Node | None]:
    """The one YAML reader for configs: safe, strict about duplicate keys, errors with file and line."""
    try:
        node = yaml.compose(text, Loader=StrictLoader)
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (StrictLoader is a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=path, line=line) from exc
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a timestamp out of range
        raise ConfigError(f"invalid YAML value: {exc}", path=path) from exc
    return data, node


def validate(model: type[M], data: Any, path: str | Path, node: yaml.Node | None = None) -> M:
    """Validate `data` into `model`; the first errors are reported with their YAML line."""
    if data is None:
        raise ConfigError("the file is empty", path=path, expected=f"a YAML mapping for {model.__name__}")
    if not isinstance(data, dict):
        raise ConfigError(f"top level is a {type(data).__name__}", path=path, expected="a YAML mapping")
    try:
        return model.model_validate(data, context={"path": Path(path)})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        line = key_line(node, tuple(first["loc"]), nearest=True)
        message = describe_error(first)
        if len(errors) > 1:
            message += "; also: " + "; ".join(describe_error(e) for e in errors[1:4])
        raise ConfigError(message, path=path, line=line) from exc


def load_yaml(path: str | Path, model: type[M]) -> M:
    path = Path(path)
    if not path.exists():
        raise ConfigError("file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", path=path, expected="a UTF-8 YAML file") from exc
    data, node = parse_yaml_text(text, path)
    return validate(model, data, path, node)


def resolve_relative(value: str, base: Path | None) -> str:
    """Resolve a path written in a YAML file: as given (relative to the working folder) when it exists,
    else relative to the YAML file's folder when that exists; schemes (hf:, bundled:) pass through."""
    if base is None or ":" in value.split("/")[0] or Path(value).is_absolute() or Path(value).exists():
        return value
    candidate = Path(base).parent / value
    return str(candidate) if candidate.exists() else value


def resolve(ref: str) -> Any:
    """The object a "module:attribute" string names, imported on first use (tables name classes and builders
    this way, so reading a config never imports torch, trl or a server)."""
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def add_flags(parser: Any, model: type[BaseModel], names: tuple[str, ...], *,
              choices: dict[str, list[str]] | None = None) -> None:
    """`--field-name` flags for schema fields (litgpt-style): type, choices, default and help come from the
    field, so a CLI and a config file cannot disagree about a default."""
    import types
    import typing

    for name in names:
        info = model.model_fields[name]
        union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
        kinds = [a for a in typing.get_args(info.annotation) if a is not type(None)] if union else [info.annotation]
        literal = next((typing.get_args(k) for k in kinds if typing.get_origin(k) is typing.Literal), None)
        kind = next((k for k in kinds if k in (int, float, str)), str)
        options = (choices or {}).get(name) or (list(literal) if literal else None)
        default = info.default
        shown = "" if default is None else f" (default {default})"
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, choices=options, default=default,
                            help=(info.description or "") + shown)


def from_flags(model: type[M], args: Any, names: tuple[str, ...], where: str = "command line") -> M:
    """The schema model from flags made by add_flags (validated like a config file)."""
    import re

    try:
        return validate(model, {name: getattr(args, name) for name in names}, where)
    except ConfigError as exc:  # say it in flags: 'batch_size' -> --batch-size
        exc.message = re.sub(r"'(" + "|".join(names) + r")'", lambda m: "--" + m.group(1).replace("_", "-"),
                             exc.message)
        exc.args = (exc.render(),)
        raise

"""The base of every config section: strict pydantic models that name the field on every error.

Defined apart from `sbi_core.config` so that the stage sections (`sbi_core/ml/options.py`,
`sbi_core/inference/options.py`) and simulator options can build on it while the config imports them.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

M = TypeVar("M", bound=BaseModel)


class ConfigSection(BaseModel):
    """Base of every config section: unknown keys are refused, values are immutable, and scalars are not
    coerced (`seed: true` or `events: "1000"` are errors naming the field; lists still fill tuples)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_scalar_coercion(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            check_scalar(value, field.annotation)
        return value


def _scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types an annotation accepts at its top level (through Optional/Union/Annotated/Literal)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_kinds(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return set().union(*(_scalar_kinds(a) for a in get_args(annotation)))
    if origin is Literal:
        return {type(a) for a in get_args(annotation)}
    if isinstance(annotation, type) and issubclass(annotation, str):
        return {str}  # str and StrEnum
    return {annotation} & {bool, int, float}


def check_scalar(value: Any, annotation: Any) -> None:
    """Refuse a bool where a number is expected and text where a number or bool is expected (pydantic's lax
    mode would turn `true` into 1 and "1000" into 1000); descends one level into lists, tuples and dicts."""
    kinds = _scalar_kinds(annotation)
    if isinstance(value, bool) and bool not in kinds and kinds & {int, float}:
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, str) and str not in kinds and kinds & {int, float, bool}:
        raise ValueError(f"expected {'a number' if kinds & {int, float} else 'true or false'}, got text")
    origin = get_origin(annotation)
    if origin is Annotated:
        check_scalar(value, get_args(annotation)[0])
        return
    if origin in (Union, UnionType):
        if isinstance(value, list | tuple | dict):  # check the collection member of the union, if any
            container = dict if isinstance(value, dict) else (list, tuple)
            for arg in get_args(annotation):
                if get_origin(arg) in (container if isinstance(container, tuple) else (container,)):
                    check_scalar(value, arg)
        return
    if origin in (list, tuple) and isinstance(value, list | tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        for i, item in enumerate(value):
            if args:
                try:
                    check_scalar(item, args[min(i, len(args) - 1)])
                except ValueError as exc:
                    raise ValueError(f"item {i}: {exc} {item!r}") from None
    elif origin is dict and isinstance(value, dict) and len(get_args(annotation)) == 2:
        for key, item in value.items():
            try:
                check_scalar(item, get_args(annotation)[1])
            except ValueError as exc:
                raise ValueError(f"{key}: {exc} {item!r}") from None


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('nuisance', 1, 'size') -> 'nuisance[1].size'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_issues(exc: ValidationError, prefix: str = "", known: list[str] | None = None) -> list[tuple[str, str]]:
    """(field path, message) per pydantic error, paths under `prefix` (e.g. `simulator.options`); a misspelt
    key lists the `known` ones when given; a scalar input is quoted back."""
    issues = []
    for err in exc.errors():
        loc = format_loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)" + (f"; known: {sorted(known)}" if known else "")
        elif err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{msg} (got {err['input']!r})"
        path = ".".join(p for p in (prefix, loc) if p)
        issues.append((path.replace(".[", "["), msg))
    return issues


def parse_section(model: type[M], data: Any, prefix: str) -> tuple[M | None, list[tuple[str, str]]]:
    """Validate `data` with a section model: (the section, []) or (None, its issues under `prefix`)."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, validation_issues(exc, prefix, list(model.model_fields))

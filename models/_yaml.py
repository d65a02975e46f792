"""YAML loading that remembers where every key came from, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(Exception):
    """A configuration or taxonomy file is invalid. `problems` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{self.path}: " + ("\n  " if len(problems) > 1 else "") + "\n  ".join(problems))


class LocatedProblems(ValueError):
    """Several problems found by a model-level check, each with the key path it is about, so a file's
    error can name the line of that key (a split's `by`, a target) instead of the top of the file."""

    def __init__(self, problems: list[tuple[tuple, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{format_loc(loc)}: {msg}" for loc, msg in problems))


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML; return the data and a map from key path (tuple of keys/indexes) to 1-based line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    lines: dict[tuple, int] = {}

    def walk(n: yaml.Node, at: tuple) -> None:
        lines[at] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = yaml.safe_load(yaml.serialize(k)) if isinstance(k, yaml.ScalarNode) else str(k.value)
                lines[at + (key,)] = k.start_mark.line + 1
                walk(v, at + (key,))
                lines[at + (key,)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, at + (i,))

    if node is not None:
        walk(node, ())
    return data, lines


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest known prefix of `loc`."""
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def problems_from_validation(exc: ValidationError, lines: dict[tuple, int], strip: int = 0) -> list[str]:
    """Turn pydantic errors into 'line N: key.path: message' strings."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, LocatedProblems):
            for sub_loc, sub_msg in located.problems:
                full = loc + tuple(sub_loc)
                line = line_of(lines, full)
                problems.append(f"{'line %d: ' % line if line else ''}{format_loc(full[strip:])}: {sub_msg}")
            continue
        line = line_of(lines, loc)
        where = f"line {line}: " if line else ""
        problems.append(f"{where}{format_loc(loc[strip:])}: {msg}")
    return problems

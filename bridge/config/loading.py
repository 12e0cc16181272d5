"""Loading a config: YAML, ``${ENV}`` expansion, validation (CONTRACT §1, §2).

Each phase runs whatever the earlier ones found, and their problems are raised together
in one :class:`ConfigError`, each naming its field path, so ``streambridge check`` lists
them all in one run (CONTRACT §1): unset variables, then shapes and values (unknown keys,
bad CEL, bad durations), then what spans fields (:mod:`bridge.config.checks`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bridge.config.brokers import BROKER_TYPES
from bridge.config.checks import cross_field_problems
from bridge.config.document import Config
from bridge.config.fields import expression_context
from bridge.config.steps import STEP_KINDS
from bridge.errors import ConfigError, Problem
from bridge.expressions import DEFAULT_LIMITS, CelLimits

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
}


def format_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc as the user wrote it; union tags pydantic inserts are left out."""
    out = ""
    previous: int | str | None = None
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == previous and part in STEP_KINDS:
            continue  # the tagged-union tag repeats the step's key
        elif index == 2 and loc[0] == "brokers" and part in BROKER_TYPES:
            continue  # brokers.<name>.<type tag>.field
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def expand_env(node: Any, path: str, problems: list[Problem], env: dict[str, str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string scalar of the YAML tree."""
    if isinstance(node, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else str(k), problems, env)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [expand_env(v, f"{path}[{i}]", problems, env) for i, v in enumerate(node)]
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(Problem(path, f"environment variable {name} is not set"))
            return ""

        return _ENV.sub(substitute, node)
    return node


def shape_problems(error: ValidationError) -> list[Problem]:
    """pydantic's errors as problems with the user's field paths."""
    return [
        Problem(
            format_path(err["loc"]),
            _MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, "),
        )
        for err in error.errors()
    ]


def cel_limits(tree: Any) -> CelLimits:
    """The expression limits a config sets for itself (``gateway.limits``), read before
    the rest is validated since every expression is checked against them; values of the
    wrong kind leave the defaults (their own field reports them)."""
    gateway = tree.get("gateway") if isinstance(tree, dict) else None
    limits = gateway.get("limits") if isinstance(gateway, dict) else None
    if not isinstance(limits, dict):
        return DEFAULT_LIMITS
    length, depth = limits.get("cel_max_length"), limits.get("cel_max_depth")
    return CelLimits(
        max_length=length if isinstance(length, int) and length > 0 else DEFAULT_LIMITS.max_length,
        max_depth=depth if isinstance(depth, int) and depth > 0 else DEFAULT_LIMITS.max_depth,
    )


def parse_config(raw: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML/JSON tree; raises ConfigError naming every problem.

    A field has at most one problem: what spans fields is not reported where the value
    itself is already wrong (unset variable, wrong shape)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "the config must be a mapping at the top level")])
    problems: list[Problem] = []
    tree = expand_env(raw, "", problems, dict(os.environ) if env is None else env)
    config: Config | None = None
    try:
        config = Config.model_validate(tree, context=expression_context(cel_limits(tree)))
    except ValidationError as exc:
        problems += shape_problems(exc)
    reported = {problem.path for problem in problems}
    problems += [p for p in cross_field_problems(tree) if p.path not in reported]
    if problems or config is None:
        raise ConfigError(problems)
    return config


# libyaml's safe loader when PyYAML was built with it: the same documents, errors at the same place,
# about ten times faster (a 500-line config took 0.1 s of every gateway start).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, expand and validate a YAML config file; raises ConfigError naming every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read {path}: {exc.strerror}")]) from exc
    try:
        raw = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"{path} is not valid YAML: {_yaml_reason(exc)}")]) from exc
    return parse_config(raw, env)


def _yaml_reason(error: yaml.YAMLError) -> str:
    """The parser's complaint on one line (its own text spans several, with a caret)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{error.problem}{where}"
    return " ".join(str(error).split())

"""Topic paths with ``{parameters}`` and the channels they fill (CONTRACT §3)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A parameter value may not carry separators or wildcards of any broker (. / + # * >),
# so a client can never widen a channel it was granted.
_VALUE = r"[A-Za-z0-9_~-]+"


def path_parameters(template: str) -> set[str]:
    return set(_PARAM.findall(template))


@dataclass(frozen=True, slots=True)
class PathTemplate:
    template: str
    pattern: re.Pattern[str]

    @classmethod
    def compile(cls, template: str) -> PathTemplate:
        parts = _PARAM.split(template)
        regex = "".join(
            f"(?P<{part}>{_VALUE})" if i % 2 else re.escape(part) for i, part in enumerate(parts)
        )
        return cls(template, re.compile(f"^{regex}$"))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        return found.groupdict() if found else None


def fill(template: str, values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: values[m.group(1)], template)

"""The CEL engine: the ``cel`` package (common-expression-language) without its
interactive command line.

``cel/__init__.py`` imports ``cel.cli``, which loads typer, rich and prompt_toolkit: half of
a gateway's start-up time (and of ``streambridge check``'s), none of it used here. An empty
module stands in for ``cel.cli`` before the package is first imported, so importing ``cel``
loads the engine and its standard library only.
"""

from __future__ import annotations

import sys
import types

sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))

import cel  # noqa: E402  (after the stand-in)

__all__ = ["cel"]

"""The build: everything is declared in pyproject.toml except the compiled export.

``KOALABOT_COMPILE=1`` compiles the modules an export spends its time in with mypyc, the compiler
that ships black and mypy themselves: the same source and type hints, run as C instead of
bytecode, for about a quarter less CPU per exported row. mypyc type-checks what it compiles, so the
build runs in an environment that already has koalabot's dependencies and mypy
(``--no-build-isolation``)::

    pip install '.[compile]'
    KOALABOT_COMPILE=1 pip install --no-build-isolation --no-deps --force-reinstall .

Without it (and in every editable install) koalabot is plain Python, and behaves the same.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

#: The export's hot path: the options read per answer, each thread's view and selection, rows
#: built per format with their pseudonyms and redaction, the counts, the run and its worker
#: processes, and the time every row carries.
COMPILED = [
    "koalabot/export/options.py",
    "koalabot/export/view.py",
    "koalabot/export/rows.py",
    "koalabot/export/turns.py",
    "koalabot/export/pseudonyms.py",
    "koalabot/export/redact.py",
    "koalabot/export/summary.py",
    "koalabot/export/run.py",
    "koalabot/export/parallel.py",
    "koalabot/store/times.py",
]


def compiled_extensions() -> list[Extension]:
    """mypyc's extension modules when ``KOALABOT_COMPILE`` asks for them, else none."""
    if os.environ.get("KOALABOT_COMPILE", "").lower() not in ("1", "true", "yes"):
        return []
    if {"editable_wheel", "develop"} & set(sys.argv):
        # Compiled modules in the source tree would shadow the .py files being edited.
        raise SystemExit(
            "KOALABOT_COMPILE=1 builds a regular install (`pip install --no-build-isolation .`); "
            "an editable install stays plain Python so that edits take effect"
        )
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        raise SystemExit(
            "KOALABOT_COMPILE=1 needs mypy where the build runs: `pip install '.[compile]'`, "
            "then `KOALABOT_COMPILE=1 pip install --no-build-isolation --no-deps .`"
        ) from exc
    return list(mypycify(COMPILED, opt_level="3", group_name="koalabot_compiled"))


setup(ext_modules=compiled_extensions())

"""Battle judgements as `dpo` preference pairs: (chosen answer, rejected answer) ids.

The majority rule lives with the judgements (koalabot/store/battles.py), because the thread's
memory follows the same choice; this module is the export's name for it.
"""

from __future__ import annotations

from koalabot.store.battles import battle_pairs, preferences

__all__ = ["battle_pairs", "preferences"]

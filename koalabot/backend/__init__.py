"""The TGI backend: the only part of koalabot that imports text_generation or talks HTTP to TGI.

See reference/tgi-and-koala.md §1–2 for the wire protocol it speaks.
"""

from koalabot.backend.client import Backend
from koalabot.backend.params import GenerationParams
from koalabot.backend.pool import EndpointStatus
from koalabot.backend.stream import Completion, GenerationStream

__all__ = ["Backend", "Completion", "EndpointStatus", "GenerationParams", "GenerationStream"]

"""Server-sent events from a byte stream: TGI's `data:{json}` frames, keep-alive comments skipped.

Follows the WHATWG event-stream rules that matter here: lines end in LF, CRLF or CR; `data:`
takes one optional space; several data lines join with LF; a blank line ends an event; lines
starting with `:` are comments; other fields are ignored; an unfinished event at EOF is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

#: An event larger than this is not TGI talking; stop before memory runs out.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEError(Exception):
    """The bytes are not an event stream we can read (an event far too large)."""


class SSEReader:
    """Turns chunks of bytes into the data of each event (str), one ``next_event`` at a time."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._pos = 0
        self._data: list[str] = []
        self._eof = False

    def buffered_event(self) -> str | None:
        """The next event if it has fully arrived already, without waiting."""
        return self._event_from_buffer()

    async def next_event(self) -> str | None:
        """The next event's data, or None at the end of the stream."""
        while True:
            event = self._event_from_buffer()
            if event is not None:
                return event
            if self._eof:
                return None
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._eof = True
                # A last line without its newline still counts as a line.
                chunk = b"\n" if self._pos < len(self._buffer) else b""
            self._buffer = self._buffer[self._pos :] + chunk
            self._pos = 0
            if len(self._buffer) > MAX_EVENT_BYTES:
                raise SSEError(f"an event of more than {MAX_EVENT_BYTES} bytes")

    def _event_from_buffer(self) -> str | None:
        if not self._data:
            # TGI's framing, `data:{json}\n\n`, taken in one step.
            buffer, pos = self._buffer, self._pos
            end = buffer.find(b"\n\n", pos)
            if (
                end >= 0
                and buffer.startswith(b"data:", pos)
                and buffer.find(b"\n", pos, end) < 0
                and buffer.find(b"\r", pos, end) < 0
            ):
                self._pos = end + 2
                return buffer[pos + 5 : end].removeprefix(b" ").decode("utf-8", "replace")
        while True:
            line = self._take_line()
            if line is None:
                return None
            if not line:
                if self._data:
                    data, self._data = "\n".join(self._data), []
                    return data
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append(value.removeprefix(b" ").decode("utf-8", "replace"))

    def _take_line(self) -> bytes | None:
        buffer, pos = self._buffer, self._pos
        end = buffer.find(b"\n", pos)
        cr = buffer.find(b"\r", pos, end if end >= 0 else len(buffer))
        if cr >= 0 and (cr + 1 < len(buffer) or self._eof):
            # A CR alone, or CRLF: one line end either way.
            self._pos = cr + (2 if buffer[cr + 1 : cr + 2] == b"\n" else 1)
            return buffer[pos:cr]
        if end < 0:
            return None
        self._pos = end + 1
        return buffer[pos:end]

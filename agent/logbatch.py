"""stdout/stderr of a job, cut into lines and sent up in small timestamped batches.

Lines arrive from both streams into one ordered buffer. A line after a quiet spell (no
batch sent in the last `interval` seconds) leaves at once, so a job's first output line
never waits on a timer; lines that follow within `interval` of a send are gathered into
the next batch (sent `interval` after the previous one, or at once when full), so busy
output streams live without one message per line. Over-long lines are split; bytes that are not UTF-8
are replaced, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from google.protobuf.timestamp_pb2 import Timestamp

from c3.v1 import agent_pb2, common_pb2

MAX_LINE_BYTES = 16 * 1024
MAX_BATCH_LINES = 512
MAX_BATCH_BYTES = 512 * 1024
DEFAULT_INTERVAL = 0.025
READ_CHUNK = 64 * 1024

SendBatch = Callable[[agent_pb2.LogBatch], Awaitable[None]]


def _now(at_ns: int | None = None) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns() if at_ns is None else at_ns)
    return ts


def _cut(data: bytes, limit: int) -> int:
    """Where to cut `data` at most `limit` bytes in, not inside a UTF-8 sequence."""
    cut = min(limit, len(data))
    back = cut
    while back > cut - 4 and back > 0 and back < len(data) and (data[back] & 0xC0) == 0x80:
        back -= 1
    return back if back > 0 else cut


class LineSplitter:
    """Turns a byte stream into text lines (without the newline), splitting long ones."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = b""

    @staticmethod
    def _decode(raw: bytes) -> str:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw.decode("utf-8", errors="replace")

    def feed(self, data: bytes) -> list[str]:
        buffer = self._partial + data
        lines: list[str] = []
        start = 0
        while True:
            newline = buffer.find(b"\n", start)
            end = newline if newline >= 0 else len(buffer)
            while end - start > self.max_line_bytes:
                cut = start + _cut(buffer[start:end], self.max_line_bytes)
                lines.append(self._decode(buffer[start:cut]))
                start = cut
            if newline < 0:
                break
            lines.append(self._decode(buffer[start:newline]))
            start = newline + 1
        self._partial = buffer[start:]
        return lines

    def finish(self) -> list[str]:
        rest, self._partial = self._partial, b""
        return [self._decode(rest)] if rest else []


class LogBatcher:
    """Collects lines of one job and sends them as LogBatch messages."""

    def __init__(self, job_id: str, send: SendBatch, interval: float = DEFAULT_INTERVAL) -> None:
        self.job_id = job_id
        self._send = send
        self._interval = interval
        self._lines: list[common_pb2.LogLine] = []
        self._bytes = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._last_sent = float("-inf")  # monotonic time of the last batch
        self._next_index = 1  # LogLine.index: per job, from 1, never reused

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"logs-{self.job_id}")

    def add(self, stream: common_pb2.LogStream.ValueType, text: str,
            at_ns: int | None = None) -> None:
        self._lines.append(common_pb2.LogLine(stream=stream, text=text, at=_now(at_ns),
                                              index=self._next_index))
        self._next_index += 1
        self._bytes += len(text)
        self._wake.set()
        if len(self._lines) >= MAX_BATCH_LINES or self._bytes >= MAX_BATCH_BYTES:
            self._full.set()

    def system(self, text: str, at_ns: int | None = None) -> None:
        self.add(common_pb2.LOG_STREAM_SYSTEM, text, at_ns)

    async def _flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines, self._bytes = self._lines, [], 0
        self._full.clear()
        self._last_sent = time.monotonic()
        await self._send(agent_pb2.LogBatch(job_id=self.job_id, lines=lines))

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            # Right after a batch went out, give the next a few ms to fill, unless it is
            # already full or we close; after a quiet spell, send at once.
            wait = self._last_sent + self._interval - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), timeout=wait)
                except TimeoutError:
                    pass
            await self._flush()

    async def close(self) -> None:
        """Send what is left and stop."""
        self._closed = True
        self._wake.set()
        self._full.set()
        if self._task is not None:
            await self._task
        await self._flush()

    async def pump(self, reader: asyncio.StreamReader, stream: common_pb2.LogStream.ValueType) -> None:
        """Read one of the script's pipes until EOF."""
        splitter = LineSplitter()
        while chunk := await reader.read(READ_CHUNK):
            for line in splitter.feed(chunk):
                self.add(stream, line)
        for line in splitter.finish():
            self.add(stream, line)

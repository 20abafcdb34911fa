"""Git's pkt-line framing, and the few parts of the smart protocol the server reads itself.

Pure byte code, no I/O. C git does the real protocol work; the server reads only:

- the command section of a receive-pack request (``<old> <new> <ref>`` lines up to the
  first flush), so that every ref name is checked by our rules before git sees it and a
  malformed request is refused before a process is started;
- the response streams, to learn whether a push updated a ref (``ok <ref>`` in the report)
  and whether a fetch sent a pack, for ``last_push_at`` and the push/pull events.

Validation is strict on purpose: a length is exactly four hex digits (``int(x, 16)`` alone
would accept ``+fff`` or `` fff``), and lengths 1-3 or above 65520 are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FLUSH = b"0000"
DELIM = b"0001"
RESPONSE_END = b"0002"
# Git's LARGE_PACKET_MAX: the largest pkt-line, its four length digits included.
MAX_PKT_LEN = 65520
# A receive-pack command section larger than this is refused: 4 MiB is ~40,000 ref
# updates in one push, far beyond any real client, and it is the most we buffer.
MAX_COMMAND_SECTION = 4 << 20

SIDEBAND_DATA, SIDEBAND_PROGRESS, SIDEBAND_ERROR = 1, 2, 3
MESSAGES_TAIL = 4096  # characters of side-band progress text a scanner keeps
ZERO_OID = "0" * 40
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_OID = re.compile(r"[0-9a-f]{40}")


class PktError(ValueError):
    """The bytes are not a well-formed pkt-line stream (or break one of our bounds)."""


def encode(payload: bytes) -> bytes:
    if len(payload) + 4 > MAX_PKT_LEN:
        raise ValueError("payload too large for one pkt-line")
    return b"%04x" % (len(payload) + 4) + payload


def encode_line(text: str) -> bytes:
    return encode(text.encode() + b"\n")


def parse_length(header: bytes) -> int:
    """The total length a four-byte pkt-line header announces (0-2 for special packets)."""
    if not _HEX4.fullmatch(header):
        raise PktError(f"invalid pkt-line length {header[:4]!r}")
    length = int(header, 16)
    if length == 3 or length > MAX_PKT_LEN:
        raise PktError(f"invalid pkt-line length {length} (must be 0-2 or 4-{MAX_PKT_LEN})")
    return length


def error_packet(message: str, *, sideband: bool) -> bytes:
    """An error git clients print: ``remote error: ...`` (band 3) or an ``ERR`` packet."""
    text = message.replace("\n", " ")[:1000].encode("utf-8", "replace")
    if sideband:
        return encode(bytes([SIDEBAND_ERROR]) + text + b"\n")
    return encode(b"ERR " + text + b"\n")


# -- receive-pack request ----------------------------------------------------------------


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def is_delete(self) -> bool:
        return self.new == ZERO_OID


@dataclass
class PushCommands:
    updates: list[RefUpdate] = field(default_factory=list)
    capabilities: frozenset[str] = frozenset()
    shallow: list[str] = field(default_factory=list)

    @property
    def sideband(self) -> bool:
        return bool({"side-band-64k", "side-band"} & self.capabilities)


class PushCommandReader:
    """Reads a receive-pack request's command section from a stream, incrementally.

    ``feed`` returns ``True`` once the flush that ends the section has been seen; then
    ``commands`` holds the parsed section, ``consumed`` the exact bytes it was made of (to
    be passed on to git unchanged) and ``rest`` whatever followed in the last chunk.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0
        self.commands = PushCommands()
        self.done = False
        self.consumed = b""
        self.rest = b""

    def feed(self, data: bytes) -> bool:
        if self.done:
            raise RuntimeError("command section already complete")
        self._buffer += data
        while not self.done:
            if len(self._buffer) - self._offset < 4:
                break
            length = parse_length(bytes(self._buffer[self._offset:self._offset + 4]))
            if length == 0:
                end = self._offset + 4
                self.consumed = bytes(self._buffer[:end])
                self.rest = bytes(self._buffer[end:])
                self.done = True
                break
            if length < 4:
                raise PktError("unexpected special packet in the push command list")
            if len(self._buffer) - self._offset < length:
                break
            payload = bytes(self._buffer[self._offset + 4:self._offset + length])
            self._offset += length
            self._line(payload)
        if not self.done and len(self._buffer) > MAX_COMMAND_SECTION:
            raise PktError(f"push command list is larger than {MAX_COMMAND_SECTION} bytes")
        return self.done

    def finish(self) -> None:
        """The stream ended: fine before any byte (an empty probe), an error mid-section."""
        if not self.done and self._buffer:
            raise PktError("request ended before the push command list was complete")

    def _line(self, payload: bytes) -> None:
        line, nul, caps = payload.partition(b"\0")
        if nul and (self.commands.updates or self.commands.capabilities):
            raise PktError("capabilities may only follow the first command")
        text = line.rstrip(b"\n").decode("utf-8", "replace")
        if text.startswith("shallow ") and not nul and not self.commands.updates:
            if not _OID.fullmatch(text[len("shallow "):]):
                raise PktError(f"malformed shallow line {text[:200]!r}")
            self.commands.shallow.append(text[len("shallow "):])
            return
        parts = text.split(" ")
        if len(parts) != 3 or not _OID.fullmatch(parts[0]) or not _OID.fullmatch(parts[1]):
            raise PktError(f"malformed push command {text[:200]!r}")
        if nul:
            self.commands.capabilities = frozenset(
                caps.rstrip(b"\n").decode("ascii", "replace").split()
            )
        self.commands.updates.append(RefUpdate(parts[0], parts[1], parts[2]))


# -- response scanning --------------------------------------------------------------------


class _Splitter:
    """Splits a byte stream into pkt-line payloads, tolerating arbitrary chunk borders."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.broken = False  # saw bytes that are not pkt-lines (e.g. a raw pack)

    def feed(self, data: bytes) -> list[bytes | None]:
        """Complete packets: payloads, or ``None`` for a flush/delim/response-end."""
        out: list[bytes | None] = []
        if self.broken:
            return out
        self._buffer += data
        offset = 0
        while len(self._buffer) - offset >= 4:
            header = bytes(self._buffer[offset:offset + 4])
            try:
                length = parse_length(header)
            except PktError:
                self.broken = True
                out.append(header)  # let the caller look at what broke the framing
                break
            if length < 4:
                out.append(None)
                offset += 4
                continue
            if len(self._buffer) - offset < length:
                break
            out.append(bytes(self._buffer[offset + 4:offset + length]))
            offset += length
        del self._buffer[:offset]
        return out


class UploadPackScanner:
    """Notices whether an upload-pack response carried a pack (a clone or fetch happened)."""

    def __init__(self) -> None:
        self._outer = _Splitter()
        self.sent_pack = False

    def feed(self, data: bytes) -> None:
        if self.sent_pack or self._outer.broken:
            return
        for packet in self._outer.feed(data):
            # With side-band the pack starts in a band-1 packet; without it the raw pack
            # follows the last pkt-line, where the next length should have been.
            if packet is not None and (packet.startswith(b"\x01PACK") or packet == b"PACK"):
                self.sent_pack = True
                return


class ReceivePackScanner:
    """Reads a receive-pack report (``unpack ok``, ``ok <ref>``, ``ng <ref> why``)."""

    def __init__(self, sideband: bool) -> None:
        self.sideband = sideband
        self._outer = _Splitter()
        self._inner = _Splitter()
        self.updated: list[str] = []
        self.rejected: list[str] = []
        self.unpack_error: str | None = None
        self.messages = ""  # the tail of what git told the client on side-band channel 2

    def feed(self, data: bytes) -> None:
        for packet in self._outer.feed(data):
            if packet is None:
                continue
            if not self.sideband:
                self._report(packet)
            elif packet[:1] == bytes([SIDEBAND_DATA]):
                for inner in self._inner.feed(packet[1:]):
                    if inner is not None:
                        self._report(inner)
            elif packet[:1] == bytes([SIDEBAND_PROGRESS]):
                text = packet[1:].decode("utf-8", "replace")
                self.messages = (self.messages + text)[-MESSAGES_TAIL:]

    def _report(self, payload: bytes) -> None:
        line = payload.rstrip(b"\n").decode("utf-8", "replace")
        if line.startswith("unpack ") and line != "unpack ok":
            self.unpack_error = line[len("unpack "):]
        elif line.startswith("ok "):
            self.updated.append(line[3:])
        elif line.startswith("ng "):
            self.rejected.append(line[3:].split(" ", 1)[0])

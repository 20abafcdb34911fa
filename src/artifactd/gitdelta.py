"""git's delta format, shared by the server's pack reader (storage/packparse) and the
mount's (fs/fetchpack), which may not import each other's layer."""

from __future__ import annotations


class DeltaError(ValueError):
    """A delta that does not apply to its base."""


class DeltaTooLarge(DeltaError):
    """A delta whose declared result is over the caller's bound."""


def _varint(delta: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = delta[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def apply_delta(base: bytes, delta: bytes, max_result: int | None = None) -> bytes:
    """Base size, result size, then copy and insert instructions; every bound checked."""
    try:
        base_size, at = _varint(delta, 0)
        result_size, at = _varint(delta, at)
        if base_size != len(base):
            raise DeltaError("delta base size does not match its base")
        if max_result is not None and result_size > max_result:
            raise DeltaTooLarge("delta result too large")
        out = bytearray()
        end = len(delta)
        while at < end:
            op = delta[at]
            at += 1
            if op & 0x80:
                offset = length = 0
                for bit, shift in ((0x01, 0), (0x02, 8), (0x04, 16), (0x08, 24)):
                    if op & bit:
                        offset |= delta[at] << shift
                        at += 1
                for bit, shift in ((0x10, 0), (0x20, 8), (0x40, 16)):
                    if op & bit:
                        length |= delta[at] << shift
                        at += 1
                length = length or 0x10000
                if offset + length > len(base):
                    raise DeltaError("delta copies beyond its base")
                out += base[offset:offset + length]
            elif op:
                if at + op > end:
                    raise DeltaError("delta insert beyond its end")
                out += delta[at:at + op]
                at += op
            else:
                raise DeltaError("delta has a reserved instruction")
            if len(out) > result_size:
                raise DeltaError("delta result larger than declared")
    except IndexError:
        raise DeltaError("delta is truncated") from None
    if len(out) != result_size:
        raise DeltaError("delta result size does not match")
    return bytes(out)

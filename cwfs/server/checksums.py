"""S3 flexible checksums: the algorithms, their wire form, aws-chunked bodies, composites.

Pure functions with no moto in sight, so the rules the filesystem's upload path will be
held to (what a checksum value looks like, how a multipart composite is formed, how a
trailer arrives) are written down once and can be checked on their own. moto's own
helper silently falls back to CRC32 for CRC32C without the ``crc32c`` package, which is
why we compute everything here with awscrt and hashlib.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from awscrt import checksums as crt

from .responses import S3Error

#: CRC algorithms: (awscrt function, digest width in bytes). They can run incrementally.
_CRCS: dict[str, tuple[Callable[[bytes, int], int], int]] = {
    "CRC32": (crt.crc32, 4),
    "CRC32C": (crt.crc32c, 4),
    "CRC64NVME": (crt.crc64nvme, 8),
}
_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
}
ALGORITHMS: tuple[str, ...] = (*_CRCS, *_HASHES)

COMPOSITE, FULL_OBJECT = "COMPOSITE", "FULL_OBJECT"


def header_name(algorithm: str) -> str:
    """The request/response header that carries a value of this algorithm."""
    return f"x-amz-checksum-{algorithm.lower()}"


def known_algorithm(name: str | None, header: str) -> str | None:
    """Normalise an algorithm name from a request header; 400 InvalidRequest if unknown."""
    if not name:
        return None
    algorithm = name.strip().upper()
    if algorithm not in ALGORITHMS:
        raise S3Error(400, "InvalidRequest", f"Value for {header} header is invalid.")
    return algorithm


def digest(algorithm: str, data: bytes) -> bytes:
    """The raw (big-endian) digest of ``data``."""
    if algorithm in _CRCS:
        return crc_digest(algorithm, crc_update(algorithm, data, 0))
    return _HASHES[algorithm](data).digest()


def crc_update(algorithm: str, data: bytes, previous: int) -> int:
    """Continue a CRC over more data (how a FULL_OBJECT checksum spans parts)."""
    return _CRCS[algorithm][0](data, previous)


def crc_digest(algorithm: str, value: int) -> bytes:
    """A CRC register as the big-endian bytes S3 base64-encodes."""
    return value.to_bytes(_CRCS[algorithm][1], "big")


def supports_full_object(algorithm: str) -> bool:
    """Only CRCs can be combined over a whole multipart object."""
    return algorithm in _CRCS


def encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def decode_value(algorithm: str, value: str) -> bytes:
    """The raw digest a client sent; 400 InvalidRequest if it is not one of this algorithm."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    width = _CRCS[algorithm][1] if algorithm in _CRCS else _HASHES[algorithm]().digest_size
    if len(raw) != width:
        raise S3Error(
            400, "InvalidRequest", f"Value for {header_name(algorithm)} header is invalid."
        )
    return raw


def bad_digest(algorithm: str) -> S3Error:
    """What S3 answers when the body does not match the checksum the client sent."""
    return S3Error(
        400, "BadDigest", f"The {algorithm} you specified did not match the calculated checksum."
    )


@dataclass(frozen=True)
class Checksum:
    """A stored checksum: value is base64 of the digest; COMPOSITE ones count their parts."""

    algorithm: str
    value: str
    type: str = FULL_OBJECT
    parts: int | None = None

    @property
    def qualified(self) -> str:
        """The value as S3 shows it: composites end in ``-<number of parts>``."""
        return f"{self.value}-{self.parts}" if self.type == COMPOSITE else self.value

    @property
    def header(self) -> str:
        return header_name(self.algorithm)

    def xml_fields(self) -> dict[str, str]:
        """The ``<ChecksumXXX>`` and ``<ChecksumType>`` elements of S3's XML results."""
        return {f"Checksum{self.algorithm}": self.qualified, "ChecksumType": self.type}


def verified(algorithm: str, claimed: str, payload: bytes) -> Checksum:
    """The checksum of ``payload`` if it matches what the client claimed, else BadDigest."""
    expected = decode_value(algorithm, claimed)
    actual = digest(algorithm, payload)
    if actual != expected:
        raise bad_digest(algorithm)
    return Checksum(algorithm, encode(actual))


def composite(algorithm: str, part_digests: list[bytes]) -> Checksum:
    """S3's multipart composite: the algorithm over the concatenated raw part digests."""
    return Checksum(
        algorithm, encode(digest(algorithm, b"".join(part_digests))), COMPOSITE, len(part_digests)
    )


def decode_aws_chunked(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """Payload and trailers of an ``aws-chunked`` body (signed or unsigned chunks).

    Each chunk is ``<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n``; a zero-size chunk
    ends the data and is followed by ``name:value\\r\\n`` trailer lines and a blank line.
    """
    chunks, pos = [], 0
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            raise S3Error(400, "IncompleteBody", "The request body terminated unexpectedly")
        size = int(raw[pos:end].split(b";", 1)[0].strip() or b"0", 16)
        pos = end + 2
        if size == 0:
            break
        chunks.append(raw[pos : pos + size])
        pos += size + 2
    trailers = {}
    for line in raw[pos:].split(b"\r\n"):
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            trailers[name.strip().lower()] = value.strip()
    return b"".join(chunks), trailers

"""AWS Signature Version 4 verification for the one configured credential pair.

The point is realism for the client under test: a wrong access key id or secret must
fail the way S3 fails (403 InvalidAccessKeyId / SignatureDoesNotMatch), for path and
virtual-hosted requests alike, including absolute-form (proxy) request lines. The
payload hash is taken from ``x-amz-content-sha256`` as signed; the body is not re-hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote

from .ops import Target, environ_header
from .responses import S3Error

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)"
    r"\s*,\s*Signature=([0-9a-fA-F]+)"
)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _uri_encode(text: str, safe: str) -> str:
    return quote(text, safe=safe + "-_.~")


def _canonical_query(raw_query: str, drop: str | None = None, reencode: bool = False) -> str:
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        name, _, value = part.partition("=")
        if reencode:
            name = _uri_encode(unquote(name.replace("+", " ")), "")
            value = _uri_encode(unquote(value.replace("+", " ")), "")
        if drop and unquote(name) == drop:
            continue
        pairs.append((name, value))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _canonical_headers(environ: Mapping[str, object], names: list[str]) -> str:
    lines = []
    for name in names:
        value = environ_header(environ, name) or ""
        lines.append(f"{name}:{' '.join(value.split())}\n")
    return "".join(lines)


def _signature(secret: str, scope: list[str], amz_date: str, canonical: str) -> str:
    date, region, service = scope[1], scope[2], scope[3]
    key = _hmac(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            "/".join(scope[1:]),
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _signature_parts(
    environ: Mapping[str, object], target: Target
) -> tuple[str, str, str, str, str, str | None]:
    """Credential, signed headers, signature, date, payload hash, and the query key the
    signature itself sits in, from the Authorization header or a presigned URL."""
    authorization = environ_header(environ, "Authorization")
    query = dict(parse_qsl(target.raw_query, keep_blank_values=True))
    if authorization:
        match = _AUTH.match(authorization.strip())
        if authorization.startswith("AWS "):
            raise S3Error(400, "InvalidRequest", "Signature Version 2 is not supported; use SigV4")
        if not match:
            raise S3Error(
                400,
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; only AWS4-HMAC-SHA256 is supported",
            )
        amz_date = environ_header(environ, "x-amz-date") or environ_header(environ, "Date") or ""
        payload = environ_header(environ, "x-amz-content-sha256") or "UNSIGNED-PAYLOAD"
        return match.group(1), match.group(2), match.group(3), amz_date, payload, None
    if "X-Amz-Signature" in query:
        credential, signed = query.get("X-Amz-Credential", ""), query.get("X-Amz-SignedHeaders", "")
        given, amz_date = query["X-Amz-Signature"], query.get("X-Amz-Date", "")
        return credential, signed, given, amz_date, "UNSIGNED-PAYLOAD", "X-Amz-Signature"
    if "Signature" in query or "AWSAccessKeyId" in query:
        raise S3Error(400, "InvalidRequest", "Signature Version 2 is not supported; use SigV4")
    raise S3Error(403, "AccessDenied", "Access Denied (the request is not signed)")


def verify_request(
    environ: Mapping[str, object], target: Target, access_key: str, secret_key: str
) -> None:
    """Raise the S3Error S3 would send if the request is not signed by our credentials.

    Supports header-signed requests and presigned URLs (X-Amz-Signature in the query).
    """
    method = str(environ.get("REQUEST_METHOD", "GET"))
    credential, signed, given, amz_date, payload, drop = _signature_parts(environ, target)
    scope = credential.split("/")
    if len(scope) != 5:
        raise S3Error(400, "AuthorizationHeaderMalformed", "The credential scope is malformed")
    if scope[0] != access_key:
        raise S3Error(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=scope[0],
        )
    names = signed.lower().split(";")
    headers_part = _canonical_headers(environ, names)
    raw_paths = [target.raw_path, _uri_encode(unquote(target.raw_path), "/")]
    queries = [
        _canonical_query(target.raw_query, drop),
        _canonical_query(target.raw_query, drop, True),
    ]
    for path in dict.fromkeys(raw_paths):
        for canonical_query in dict.fromkeys(queries):
            canonical = "\n".join(
                [method, path, canonical_query, headers_part, signed.lower(), payload]
            )
            if hmac.compare_digest(
                _signature(secret_key, scope, amz_date, canonical), given.lower()
            ):
                return
    raise S3Error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        AWSAccessKeyId=scope[0],
    )

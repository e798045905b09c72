"""Pre-flight checks: fail a mount in seconds, with a reason, before the filesystem starts.

Part of the store layer (it imports boto3 for its one probe request, made before the
filesystem exists); `cwfs.store` remains the one module that talks to S3 for the
filesystem.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import replace
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cwfs.config import StoreSettings
from cwfs.credentials import build_session, s3_client
from cwfs.store import client_config

PROBE_ATTEMPTS = 2
PROBE_CONNECT_TIMEOUT = 5.0


class MountError(Exception):
    """The bucket cannot be mounted; the message is meant for the user."""


def require_tls13(
    host: str, port: int, timeout: float = 10.0, context: ssl.SSLContext | None = None
) -> None:
    """Fail unless ``host:port`` completes a TLS 1.3 handshake.

    OpenSSL negotiates the highest version both sides offer, so once this probe
    succeeds every botocore connection to the endpoint uses TLS 1.3 as well.
    """
    if not ssl.HAS_TLSv1_3:
        raise MountError(
            f"this Python's OpenSSL ({ssl.OPENSSL_VERSION}) cannot speak TLS 1.3, "
            f"which {host} requires"
        )
    context = context or ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host):
                pass
    except ssl.SSLError as exc:
        raise MountError(
            f"{host}:{port} did not complete a TLS 1.3 handshake ({exc.reason}); "
            "CoreWeave's endpoint requires TLS 1.3"
        ) from None
    except OSError as exc:
        raise MountError(f"cannot reach {host}:{port}: {exc}") from None


def check_mountable(settings: StoreSettings, prefix: str) -> None:
    """Fail fast, with a message for the user, if the bucket cannot be listed (with no
    bucket, ``--all-buckets``: if the account's buckets cannot be).

    Blocking; called once before the filesystem starts, with few retries so a
    wrong bucket, endpoint or key pair is reported in seconds.
    """
    endpoint = urlparse(settings.endpoint)
    if settings.is_coreweave and endpoint.scheme == "https":
        host = f"{settings.bucket}.{endpoint.hostname}" if settings.bucket else endpoint.hostname
        require_tls13(host or "", endpoint.port or 443, settings.connect_timeout)
    quick = replace(
        settings,
        max_attempts=PROBE_ATTEMPTS,
        connect_timeout=min(settings.connect_timeout, PROBE_CONNECT_TIMEOUT),
    )
    probe = s3_client(
        build_session(quick), quick.endpoint, client_config(quick, quick.max_attempts)
    )
    try:
        if settings.bucket:
            probe.list_objects_v2(Bucket=settings.bucket, Prefix=prefix, MaxKeys=1)
        else:
            probe.list_buckets()
    except NoCredentialsError:
        raise refusal(settings, "NoCredentials") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise refusal(settings, error.get("Code", "Unknown"), error.get("Message", "")) from None
    except BotoCoreError as exc:
        raise MountError(f"cannot reach {settings.endpoint}: {exc}") from None


def refusal(settings: StoreSettings, code: str, message: str = "") -> MountError:
    """Why the store refused to list the bucket (S3 error ``code``), for the user."""
    if code == "NoCredentials":
        return MountError(
            "no credentials found: set ACCESS_KEY_ID/SECRET_ACCESS_KEY, create the 'cw' profile "
            "in ~/.coreweave/cw.credentials, or use --profile"
        )
    where = f"bucket {settings.bucket!r} at {settings.endpoint}"
    if not settings.bucket:
        where, permission = f"the buckets at {settings.endpoint}", "s3:ListAllMyBuckets"
    else:
        permission = "s3:ListBucket"
    if code == "NoSuchBucket":
        return MountError(f"{where} does not exist (NoSuchBucket)")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return MountError(
            f"the credentials were rejected by {settings.endpoint} ({code}): "
            "check the access key and secret"
        )
    if code in ("AccessDenied", "403"):
        return MountError(f"access denied listing {where} (needs {permission})")
    return MountError(f"cannot list {where}: {code} {message}".rstrip())

"""Credentials: the boto3 session a store signs its requests with.

Part of the store layer (it imports boto3), but it makes no request: `cwfs.store` is
the one module that talks to S3 for the filesystem. Lookup order: the profile given
(in the CoreWeave files when they define it, see `cwfs.config`), then CoreWeave's
``ACCESS_KEY_ID``/``SECRET_ACCESS_KEY``, then the standard AWS chain.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import botocore.config
import botocore.session

from cwfs.config import StoreSettings
from cwfs.sigv4 import Credentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def build_session(settings: StoreSettings) -> botocore.session.Session:
    """A session with the settings' credentials, leaving timestamps as text.

    botocore's general timestamp parser took half the CPU time of listing 10,000 keys;
    `cwfs.store.timestamp_seconds` parses them instead.
    """
    core = botocore.session.Session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=lambda text: text
    )
    if settings.credentials_file is not None:
        core.set_config_variable("credentials_file", str(settings.credentials_file))
    if settings.config_file is not None:
        core.set_config_variable("config_file", str(settings.config_file))
    if settings.profile is not None:
        core.set_config_variable("profile", settings.profile)
    elif os.environ.get("ACCESS_KEY_ID") and os.environ.get("SECRET_ACCESS_KEY"):
        core.set_credentials(os.environ["ACCESS_KEY_ID"], os.environ["SECRET_ACCESS_KEY"])
    return core


def s3_client(
    session: botocore.session.Session, endpoint: str, config: botocore.config.Config
) -> S3Client:
    """The session's S3 client for ``endpoint``, typed as boto3's would be."""
    return cast("S3Client", session.create_client("s3", endpoint_url=endpoint, config=config))


def signing_credentials(
    session: botocore.session.Session,
) -> Callable[[], Credentials | None]:
    """For `cwfs.wire`: the session's current keys, refreshed as botocore would."""

    def current() -> Credentials | None:
        credentials = session.get_credentials()
        if credentials is None:
            return None
        frozen = credentials.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            return None
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    return current


def ca_bundle(session: botocore.session.Session) -> str | None:
    """The CA bundle botocore verifies TLS with, when one is configured."""
    bundle = session.get_config_variable("ca_bundle")
    return str(bundle) if bundle else None


def uses_proxy(endpoint: str) -> bool:
    """Whether the environment sends requests to ``endpoint`` through a proxy."""
    parts = urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(parts.scheme)
    return bool(proxy) and not urllib.request.proxy_bypass(parts.hostname or "")

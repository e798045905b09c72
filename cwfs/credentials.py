"""Credentials: the boto3 session a store signs its requests with.

Part of the store layer (it imports boto3), but it makes no request: `cwfs.store` is
the one module that talks to S3 for the filesystem. Lookup order: the profile given
(in the CoreWeave files when they define it, see `cwfs.config`), then CoreWeave's
``ACCESS_KEY_ID``/``SECRET_ACCESS_KEY``, then the standard AWS chain.
"""

from __future__ import annotations

import os

import boto3
import botocore.session

from cwfs.config import StoreSettings


def build_session(settings: StoreSettings) -> boto3.Session:
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
    return boto3.Session(botocore_session=core)

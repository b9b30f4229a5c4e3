"""Logging for the service: structlog JSON lines on stdout, secrets scrubbed.

:func:`configure_logging` is called once at start (``socbridge run``): every
log line is one JSON object on stdout, which journald stores per unit. The
:class:`Redactor` processor runs last before rendering and removes secrets in
two ways: any value under a key that names a secret (``*key``, ``*token``,
``*secret``, ``*password``, ``authorization``, ``cookie``) is replaced by
``"***"``, and every string anywhere in the event dict (nested too) has each
known secret value (the loaded ConnectWise keys, SOC token and webhook
secret, added with :meth:`Redactor.add`) replaced by ``"***"`` (R15).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from daemon.service.secrets import Secret, SecretError, load_secret

MASK = "***"
SECRET_KEY = re.compile(r"(key|token|secret|password|passwd|authorization|cookie)$", re.I)
MIN_SECRET_LEN = 6  # shorter values would scrub ordinary words; real keys are longer


class Redactor:
    """A structlog processor that removes secret values and secret-named fields."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        self._values: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Secret | None) -> None:
        """Scrub this secret's value from every later log line."""
        if secret is not None and len(secret.reveal()) >= MIN_SECRET_LEN:
            self._values.add(secret.reveal())

    def add_refs(self, refs: Iterable[str]) -> None:
        """Load and add each secret reference that can be read now (others are skipped)."""
        for ref in refs:
            try:
                self.add(load_secret(ref))
            except (SecretError, OSError):
                continue

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._values:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, Secret):
            return MASK
        if isinstance(value, dict):
            return {
                k: MASK if isinstance(k, str) and SECRET_KEY.search(k) else self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.scrub(v) for v in value]
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return self.scrub(str(value))

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return self.scrub(dict(event_dict))  # type: ignore[no-any-return]


def config_secret_refs(config: Any) -> list[str]:
    """The secret references of a :class:`daemon.service.config.Config`."""
    return [
        config.connectwise.public_key,
        config.connectwise.private_key,
        config.soc.api_token,
        config.soc.webhook.signing_secret,
    ]


def configure_logging(
    redactor: Redactor, stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    """JSON lines on ``stream`` (stdout) for the whole process, through ``redactor``."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )

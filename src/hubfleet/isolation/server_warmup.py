"""Preloaded by the user servers' fork template (forkserver.SERVER_PRELOAD): work every server repeats at
start that does not depend on the user, done once in the template.

- httpx's default TLS context (certifi's bundle, parsed by OpenSSL: ≈ 0.15-0.2 s of CPU, a third of a forked
  server's start) is made here and handed to each new client that asks for exactly that default. jupyterlab's
  extension manager makes such a client at every start. A client that names its own CA file, a client
  certificate, or runs with SSL_CERT_FILE/SSL_CERT_DIR set gets a context of its own as before. The context
  holds public CA certificates only; each forked server has its own copy.

Importing this module starts no thread and opens no socket.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx._config
import httpx._transports.default as transports

_original = httpx._config.create_ssl_context
_default: ssl.SSLContext = _original()


def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's create_ssl_context, with the default case answered from the template's context."""
    if (
        verify is True
        and cert is None
        and not (trust_env and (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")))
    ):
        return _default
    return _original(verify=verify, cert=cert, trust_env=trust_env)


transports.create_ssl_context = create_ssl_context

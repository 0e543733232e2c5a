"""fleet.yaml `front_door`: the HTTPS server (Caddy) in front of a fleet's local hubs and its console.

Each local hub is served at its own `domain`, or at `/<hub name>/` under the front door's `domain`; the
console at `console_domain`. Certificates come from an ACME CA (Let's Encrypt unless told otherwise), from
Caddy's own local CA (`internal`: demos and tests), or from files the operator provides.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from hubfleet.config.fields import DomainName, Email, Strict
from hubfleet.config.secret_refs import PathOrSecret

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


class Acme(Strict):
    """Certificates from an ACME CA, obtained and renewed by Caddy (HTTP-01 on `http_port`, TLS-ALPN-01 on
    `https_port`: the CA must reach this machine on ports 80 or 443 at each domain)."""

    email: Email | None = Field(
        default=None, description="Account e-mail: the CA writes to it about expiring certificates."
    )
    directory: str = Field(
        default=LETS_ENCRYPT,
        pattern=r"^https://\S+$",
        description="ACME directory URL: Let's Encrypt by default; its staging directory "
        f"({LETS_ENCRYPT_STAGING}) while trying things out; any other ACME CA.",
    )
    ca_root: str | None = Field(
        default=None,
        min_length=1,
        description="PEM file of a private ACME CA's root certificate (relative to the fleet directory), "
        "so that Caddy trusts that CA's directory and the prober what it issues. Unset for public CAs.",
    )


class CertificateFile(Strict):
    """A certificate the operator provides (renewing it is the operator's job; the prober warns ahead)."""

    certificate: PathOrSecret = Field(
        description="The PEM certificate chain: a file path (relative to the fleet directory) or "
        "{secret: KEY}, a fleet-level secret holding the PEM text."
    )
    key: PathOrSecret = Field(
        description="Its private key: preferably {secret: KEY} (a fleet-level secret set with "
        "`hubfleet secrets set --fleet-level KEY < key.pem`), or a file path readable by hubfleet."
    )


class Certificates(Strict):
    """Where certificates come from: exactly one of `acme`, `internal` and `files`."""

    acme: Acme | None = None
    internal: bool = Field(
        default=False,
        description="Caddy's own local CA: browsers warn until its root is trusted (demos, tests).",
    )
    files: list[CertificateFile] = Field(
        default_factory=list,
        description="Certificates the operator provides; each covers one or more of the front door's names "
        "(a wildcard certificate covers them all).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Certificates:
        chosen = [
            name
            for name, on in (("acme", self.acme), ("internal", self.internal), ("files", self.files))
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"choose one source of certificates, not {' and '.join(chosen)}; "
                "keep one of acme, internal, files"
            )
        return self

    @property
    def source(self) -> str:
        """acme, internal or files; acme with Let's Encrypt when nothing is set."""
        return "internal" if self.internal else "files" if self.files else "acme"

    @property
    def acme_settings(self) -> Acme:
        return self.acme or Acme()


class FrontDoor(Strict):
    """The fleet's public HTTPS entrance on this machine (Caddy, run and reloaded by the daemon)."""

    domain: DomainName | None = Field(
        default=None,
        description="The fleet's own name: local hubs without a `domain` of their own are served at "
        "https://DOMAIN/<hub name>/.",
    )
    console_domain: DomainName | None = Field(
        default=None, description="Serve the web console at https://CONSOLE_DOMAIN (unset: loopback only)."
    )
    address: str = Field(
        default="0.0.0.0",
        pattern=r"^[0-9a-fA-F:.]+$",
        description="IP address to listen on: 0.0.0.0 for every interface, 127.0.0.1 for this machine only.",
    )
    http_port: int = Field(
        default=80, ge=1, le=65535, description="Plain HTTP: redirects to HTTPS and answers ACME HTTP-01."
    )
    https_port: int = Field(default=443, ge=1, le=65535)
    certificates: Certificates = Field(default_factory=Certificates)
    hsts_max_age: int = Field(
        default=31536000,
        ge=0,
        description="Seconds browsers keep to HTTPS for these names (Strict-Transport-Security); 0: off.",
    )
    access_log: bool = Field(
        default=True,
        description="Log each request to <data>/front-door/access.log (credentials and tokens removed).",
    )

    @model_validator(mode="after")
    def _ports_differ(self) -> FrontDoor:
        if self.http_port == self.https_port:
            raise ValueError(f"http_port and https_port are both {self.http_port}; give each its own port")
        if self.domain is not None and self.domain == self.console_domain:
            raise ValueError(
                f"domain and console_domain are both {self.domain}; give the console a name of its own "
                f"such as console.{self.domain}"
            )
        return self

"""Throwaway TLS material: self-signed certificates made with the openssl command line tool,
and server contexts for them. Runs openssl."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


@dataclass(frozen=True)
class Certificates:
    """A self-signed certificate for localhost/127.0.0.1 and an unrelated second one."""

    cert: Path
    key: Path
    other_cert: Path
    other_key: Path

    def server_context(self) -> ssl.SSLContext:
        return server_tls_context(self.cert, self.key)

    def other_server_context(self) -> ssl.SSLContext:
        return server_tls_context(self.other_cert, self.other_key)


def make_certificates(folder: Path) -> Certificates:
    cert, key = make_certificate(folder, "trusted")
    other_cert, other_key = make_certificate(folder, "untrusted")
    return Certificates(cert, key, other_cert, other_key)

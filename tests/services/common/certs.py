"""Throwaway TLS material made with the openssl command: a CA, a server and a client cert."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certs(folder: Path) -> dict[str, Path]:
    """Write ca.pem, server.pem/.key (for 127.0.0.1 and localhost), client.pem/.key."""
    names = ["ca.key", "ca.pem", "server.key", "server.pem", "client.key", "client.pem"]
    p = {n: folder / n for n in names}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p["ca.key"]),
             "-out", str(p["ca.pem"]), "-days", "2", "-subj", "/CN=stride-test-ca")  # fmt: skip
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        csr = folder / f"{who}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p[f"{who}.key"]),
                 "-out", str(csr), "-subj", f"/CN={who}")  # fmt: skip
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(p["ca.pem"]), "-CAkey",
                 str(p["ca.key"]), "-CAcreateserial", "-out", str(p[f"{who}.pem"]), "-days", "2",
                 "-extfile", str(ext))  # fmt: skip
    return p

"""The TLS material of the protocol scenarios (issue 10): one self-signed certificate for all three proxies, and what
a TLS listener negotiates with an OpenSSL client.

Why so: the three proxies must do the same cryptographic work per handshake, so they get the same key and
certificate: ECDSA on P-256 (prime256v1), made once per benchmark in the temp dir with `openssl req -x509`, for
127.0.0.1 (CN and subjectAltName). ECDSA rather than RSA 2048 because it is what a new deployment picks, and because
an RSA 2048 signature (0.7 ms of a core here, P-256 25 µs: `openssl speed`) would dominate the handshake and hide
what the proxies do around it. HAProxy wants certificate and key in one PEM file (`crt`), lb and nginx take them
apart. The listeners are TLS 1.3 only where the proxy can be told so (HAProxy `ssl-min-ver TLSv1.3`, nginx
`ssl_protocols TLSv1.3`; lb negotiates what the client offers, and every client here offers TLS 1.3 first).
negotiated() asks the listener with `openssl s_client` (OpenSSL, the library wrk, h2load and s_time use) and reads
back the version, the ciphersuite, the key-exchange group and the ALPN protocol: the report prints them per proxy,
because a different ciphersuite (AES-256-GCM against ChaCha20, say) is a different amount of work per byte.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import StartError


@dataclass
class Cert:
    cert: Path  # the certificate (PEM)
    key: Path  # its private key (PEM, unencrypted)
    combined: Path  # both, for HAProxy's `crt`


def make_cert(tmp: Path) -> Cert:
    """The benchmark's certificate, made once in TMP/tls (later calls return the same files)."""
    d = tmp / "tls"
    c = Cert(d / "cert.pem", d / "key.pem", d / "combined.pem")
    if c.combined.exists():
        return c
    d.mkdir(parents=True, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(c.key), "-out", str(c.cert), "-days", "7", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise StartError(f"openssl req could not make the certificate: {p.stderr.strip()[-500:]}")
    c.combined.write_text(c.cert.read_text() + c.key.read_text())
    c.key.chmod(0o644)  # nginx's worker runs as nobody (it reads the key as root at start; this is a throwaway key)
    return c


def negotiated(port: int, alpn: str = "h2,http/1.1") -> dict:
    """What the TLS listener on 127.0.0.1:port agrees with an OpenSSL client offering TLS 1.3 and `alpn`: protocol
    version, ciphersuite, key-exchange group, ALPN protocol, the server's signature type. Raises StartError if no
    handshake."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", alpn, "-servername", "localhost"]
    try:
        p = subprocess.run(argv, input="", capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired as e:
        raise StartError(f"openssl s_client to port {port} timed out") from e
    out = p.stdout + p.stderr
    m = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)
    if not m:
        raise StartError(f"no TLS handshake with port {port}: {out.strip()[-400:]}")
    group = re.search(r"^Server Temp Key: ([^,\n]+)", out, re.M)
    proto = re.search(r"^ALPN protocol: (\S+)", out, re.M)
    sig = re.search(r"^Peer signature type: (\S+)", out, re.M)
    return {
        "version": m.group(1),
        "cipher": m.group(2),
        "group": group.group(1).strip() if group else "?",
        "alpn": proto.group(1) if proto else "none",
        "signature": sig.group(1) if sig else "?",
    }


def negotiated_text(n: dict | None, alpn: bool = False) -> str:
    """One line for the report: `TLSv1.3 TLS_AES_256_GCM_SHA384, X25519, ECDSA` (`, ALPN h2` if asked)."""
    if not n:
        return "–"
    return f"{n['version']} {n['cipher']}, {n['group']}, {n['signature']}" + (f", ALPN {n['alpn']}" if alpn else "")

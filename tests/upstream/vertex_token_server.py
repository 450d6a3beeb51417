"""A real OAuth token endpoint on loopback, for google-auth's service-account flow.

google-auth signs a JWT with the key file's private key and POSTs the JWT-bearer grant to the
file's ``token_uri``; this server checks the assertion's RS256 signature against the public key
the test generated (so a broken signing path fails the test), counts calls, and answers
``{"access_token", "expires_in", "token_type"}``. It can hold requests at a gate (to pile up
concurrent dials behind one refresh) and can be told to fail.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenServer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.expires_in = 3600
        #: None: answer; else (status, body) to fail with.
        self.fail: tuple[int, dict[str, Any]] | None = None
        self.calls = 0
        #: When set, the next tokens issued are exactly this (the fake accepts one credential).
        self.fixed_token: str | None = None
        self.bad_assertions = 0
        self.issued: list[str] = []
        #: token -> wall-clock second it expires at (what :meth:`valid` checks, for the fake).
        self.expires_at: dict[str, float] = {}
        #: Cleared: requests wait for it (set by the test).
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                status, answer = server.answer(urllib.parse.parse_qs(body), self.path)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> TokenServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, form: dict[str, list[str]], path: str) -> tuple[int, dict[str, Any]]:
        self.gate.wait(30)
        with self.lock:
            self.calls += 1
            if form.get("grant_type") != [GRANT] or not self._valid(form.get("assertion", [""])[0]):
                self.bad_assertions += 1
                return 400, {"error": "invalid_grant", "error_description": "bad assertion"}
            if self.fail is not None:
                return self.fail
            token = self.fixed_token or f"ya29.test-{self.calls}-{secrets.token_hex(12)}"
            self.issued.append(token)
            self.expires_at[token] = time.time() + self.expires_in
            return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def valid(self, token: str) -> bool:
        """The fake's ``bearer_check``: a token this server issued and that has not expired."""
        with self.lock:
            expires = self.expires_at.get(token)
        return expires is not None and time.time() < expires

    def expired(self) -> int:
        """How many issued tokens have expired by now."""
        now = time.time()
        with self.lock:
            return sum(1 for at in self.expires_at.values() if at <= now)

    def _valid(self, assertion: str) -> bool:
        try:
            header, payload, sig = assertion.split(".")
            claims = json.loads(_b64d(payload))
            self.key.public_key().verify(
                _b64d(sig), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:  # noqa: BLE001 - any malformed assertion is simply invalid
            return False
        # google-auth puts Google's token URI in ``aud`` whatever the file's token_uri says.
        audiences = (self.uri, "https://oauth2.googleapis.com/token")
        return claims.get("aud") in audiences and claims.get("iss") == "geminid-test@p.iam.gserviceaccount.com"

    def key_file(self, directory: Path, *, token_uri: str | None = None) -> Path:
        """A service-account JSON file whose token_uri is this server (or ``token_uri``)."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "geminid-test@p.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": token_uri or self.uri,
        }
        path = directory / "sa.json"
        path.write_text(json.dumps(info))
        return path

    @property
    def private_key_marker(self) -> str:
        """A piece of the private key's PEM body, to assert it leaks nowhere."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return pem.splitlines()[5]

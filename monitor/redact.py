"""Credentials out of URLs shown to people: a private feed's URL may carry a password
(`https://user:secret@host/feed`) or a key in its query (`?apikey=...`). Every place that
formats a URL for a log line, a listing, an error or a Slack message passes it through
`redact`; only the fetcher holds the real URL."""

from __future__ import annotations

import re

MASK = "***"
# a URL in running text: up to white space or a quote, not counting a closing punctuation mark
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,:;!?)\]]")
# scheme://userinfo@: greedy up to the last "@" before the path, as URL parsers read it
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@")
_PARAM = re.compile(r"([?&;#])([^=&;#]*)=([^&;#]*)")
# a parameter is secret when its name, lowercased without separators, is one of these or
# ends with one of the suffixes: apikey, api_key, X-Amz-Signature, oauth_token, client_secret
_SECRET_NAMES = frozenset(["key", "auth", "sig", "pass", "pwd", "jwt", "session", "sid"])
_SECRET_SUFFIXES = (
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "authkey",
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "credential",
    "credentials",
    "sessionid",
    "authorization",
)


def secret_param(name: str) -> bool:
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    return squashed in _SECRET_NAMES or squashed.endswith(_SECRET_SUFFIXES)


def _one(url: str) -> str:
    url = _USERINFO.sub(rf"\1{MASK}@", url)
    return _PARAM.sub(
        lambda m: f"{m[1]}{m[2]}={MASK}" if secret_param(m[2]) and m[3] else m[0], url
    )


def redact(text: str) -> str:
    """`text` (a URL, or a message holding URLs) with every URL's user info and
    secret-looking query or fragment parameters replaced by ***; the rest stays as written."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: _one(m[0]), text)

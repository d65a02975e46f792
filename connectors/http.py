"""HTTP for the API connectors: redirects never carry credentials to another host.

urllib's default redirect handler copies every request header, the `Authorization` bearer included, to
wherever the server redirects. `open_url` follows redirects but drops the credential headers whenever
the scheme, host or port changes.
"""

from __future__ import annotations

import urllib.parse
import urllib.request


class _NoCredentialsAcrossHosts(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but a redirect to another host (or from https to http) never carries the
    credential headers: the admin key is for the provider's API host only."""

    CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "cookie", "proxy-authorization")

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        old_url, new_url = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old_url.hostname, old_url.port, old_url.scheme) != (new_url.hostname, new_url.port, new_url.scheme):
            for name in list(new.headers):
                if name.lower() in self.CREDENTIAL_HEADERS:
                    del new.headers[name]
            for name in list(new.unredirected_hdrs):
                if name.lower() in self.CREDENTIAL_HEADERS:
                    del new.unredirected_hdrs[name]
        return new


_OPENER = urllib.request.build_opener(_NoCredentialsAcrossHosts)


def open_url(req: urllib.request.Request, timeout: float):
    """urlopen with the credential-safe redirect handler."""
    return _OPENER.open(req, timeout=timeout)

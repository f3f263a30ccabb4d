"""An NS_EMAIL presence directory answered from an HTTP backend, with asyncio.

:class:`HttpPresenceDirectory` is an async provider: ``lookup`` is an async
generator (one result per NextEx, fetched when the client asks for it),
``set_service``, ``cleanup`` and ``client_session_rundown`` are coroutines.
The scaffold runs them on the provider's event loop and completes each
NextEx / SetServiceEx from there (docs/provider.md, "Async providers").
Everything it knows lives in a presence service it talks to over loopback
HTTP (:mod:`nspv2.examples.presence_backend`); docs/async-example.md
describes both.

- ``NAME`` looks one user up (``GET /v1/presence/NAME``); ``*@DOMAIN``
  lists the domain's users at the first NextEx, then fetches each entry at
  its own NextEx (a user signed out in between is skipped).
- RNRSERVICE_REGISTER signs the name in for this client session (``PUT``,
  status from the presence blob, addresses from the CS addresses);
  RNRSERVICE_DEREGISTER and RNRSERVICE_DELETE sign it out (``DELETE``).
- A client session's names are signed out when it ends (Cleanup, rundown):
  one request, ``DELETE /v1/presence?owner=SESSION``, however many it has.
  If the backend cannot be reached then, the session is remembered and its
  names are signed out when a later session of the provider ends.

Results have the shape of :mod:`nspv2.examples.email`'s (its ``Entry``, its
presence blob), so ``nspv2 lookup`` and the e-mail example's clients read
them unchanged.

Each request has a connection of its own, closed whatever happens: a lookup
ended (or timed out) while its NextEx waits on the backend cancels the
task, which closes the socket, and the backend sees the client hang up.

The backend: the constructor's ``url``, else ``NSPV2_PRESENCE_URL``, else
a seeded backend of the provider's own, started on the provider's loop at
first use and closed with the provider (``nspv2 check`` and ``nspv2 serve``
work with no setup; its users are gone when the provider closes).

Backend outcomes as Winsock errors: no answer in ``timeout`` s:
WSAETIMEDOUT; refused, reset or 5xx (the embedded backend failing to
start too): WSATRY_AGAIN; 507 (the backend is full): WSAENOBUFS; 404:
WSASERVICE_NOT_FOUND; 409: WSAEALREADY (sign-in) or WSAEACCES (sign-out),
as the e-mail example's SESSION_RESULTs; 400: WSAEINVAL; a reply that is not
the protocol: WSANO_RECOVERY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..provider.queryset import QuerySet
from ..provider.registry import Session
from ..sdk.msgrpriv import SESSION_RESULT
from ..sdk.msgrua import MISTATUS
from ..sdk.nsemail import NAPI_PROVIDER_LEVEL, NAPI_PROVIDER_TYPE, InstallationBlob
from ..sdk.winsock2 import NS, WSAESETSERVICEOP, WSAError
from .email import (
    _ADDRESS,
    _WILDCARD,
    SIGNED_IN_STATES,
    Entry,
    PresenceError,
    _key,
    _remote,
    decode_presence,
)
from .presence_backend import PresenceBackend

__all__ = [
    "HTTP_PRESENCE_PROVIDER_ID",
    "URL_VARIABLE",
    "HttpPresenceDirectory",
    "PresenceHttp",
    "Reply",
]

log = logging.getLogger("nspv2")

#: The example provider's GUID.
HTTP_PRESENCE_PROVIDER_ID = uuid.UUID("6e737032-6874-7470-8c00-707265736e63")
#: The environment variable naming the backend's URL.
URL_VARIABLE = "NSPV2_PRESENCE_URL"

#: The largest reply head and body the client reads.
_MAX_HEAD = 8192
_MAX_BODY = 1 << 20
#: At most this many sessions' sign-outs are kept to retry.
_MAX_UNSIGNED = 1024


class _Malformed(Exception):  # noqa: N818 (internal: becomes WSANO_RECOVERY)
    """The backend's reply is not the protocol."""


class Reply:
    """A backend reply: the status code and the JSON body (None when empty)."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


class PresenceHttp:
    """A tiny HTTP/1.1 client for the presence backend, on asyncio streams.

    One connection per request, closed in ``finally``: a task cancelled
    while it waits closes its socket. Failures come out as WinsockError:
    WSAETIMEDOUT past ``timeout`` s, WSATRY_AGAIN when the backend cannot
    be reached or drops the connection, WSANO_RECOVERY for a reply that is
    not the protocol. The status code is the caller's to map.
    """

    def __init__(self, url: str, timeout: float = 1.5) -> None:
        split = urllib.parse.urlsplit(url)
        try:
            port = split.port
        except ValueError:
            port = -1
        if (
            split.scheme != "http"
            or not split.hostname
            or split.path not in ("", "/")
            or split.query
            or split.fragment
            or split.username is not None
            or port == -1
        ):
            raise ValueError(
                f"{url!r} is not an http://HOST:PORT URL (the API is at /v1 of the "
                "server's root: no path, query, fragment or user)"
            )
        self.url = url.rstrip("/")
        self.host = split.hostname
        self.port = port or 80
        self.timeout = timeout

    async def request(self, method: str, path: str, body: Any = None) -> Reply:
        what = f"{method} {self.url}{path}"
        try:
            return await asyncio.wait_for(self._exchange(method, path, body), self.timeout)
        except asyncio.TimeoutError:
            raise WinsockError(
                WSAError.WSAETIMEDOUT, f"{what}: no answer in {self.timeout:g} s"
            ) from None
        except _Malformed as exc:
            raise WinsockError(WSAError.WSANO_RECOVERY, f"{what}: {exc}") from None
        except (OSError, EOFError) as exc:  # refused, reset, closed early
            raise WinsockError(
                WSAError.WSATRY_AGAIN, f"{what}: {type(exc).__name__}: {exc}"
            ) from None

    async def _exchange(self, method: str, path: str, body: Any) -> Reply:
        payload = b"" if body is None else json.dumps(body).encode()
        head = [
            f"{method} {urllib.parse.quote(path, safe='/?=&@')} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: application/json",
            "Connection: close",
        ]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=_MAX_HEAD)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + payload)
            await writer.drain()
            return await self._reply(reader)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _reply(reader: asyncio.StreamReader) -> Reply:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise EOFError("the backend closed the connection without answering") from None
            raise _Malformed("the reply's head is cut short") from None
        except asyncio.LimitOverrunError:
            raise _Malformed(f"the reply's head is over {_MAX_HEAD} bytes") from None
        try:
            line, *fields = raw[:-4].decode("ascii").split("\r\n")
            version, code, _reason = (line + " ").split(" ", 2)
            status = int(code)
        except (UnicodeDecodeError, ValueError):
            raise _Malformed(f"not an HTTP status line: {raw[:40]!r}") from None
        if not version.startswith("HTTP/1.") or not 100 <= status <= 599:
            raise _Malformed(f"not an HTTP/1.x status line: {raw[:40]!r}")
        headers = {}
        for field in fields:
            name, sep, value = field.partition(":")
            if not sep:
                raise _Malformed(f"malformed header field {field[:40]!r}")
            headers[name.strip().lower()] = value.strip()
        length_text = headers.get("content-length", "0" if status == 204 else "")
        if not length_text.isdigit() or int(length_text) > _MAX_BODY:
            raise _Malformed(f"Content-Length {length_text[:20]!r}")
        try:
            data = await reader.readexactly(int(length_text))
        except asyncio.IncompleteReadError:
            raise _Malformed("the reply's body is cut short") from None
        if not data:
            return Reply(status, None)
        try:
            return Reply(status, json.loads(data))
        except (UnicodeDecodeError, ValueError):
            raise _Malformed("the reply's body is not JSON") from None


def _status_error(reply: Reply, what: str) -> WinsockError:
    """The Winsock error for a reply the caller did not expect."""
    detail = reply.body.get("error") if isinstance(reply.body, dict) else None
    message = f"{what}: HTTP {reply.status}" + (f" ({detail})" if detail else "")
    if reply.status == 404:
        return WinsockError(WSAError.WSASERVICE_NOT_FOUND, message)
    if reply.status == 409:
        return WinsockError(WSAError.WSAEALREADY, message)
    if reply.status == 400:
        return WinsockError(WSAError.WSAEINVAL, message)
    if reply.status == 507:
        return WinsockError(WSAError.WSAENOBUFS, message)
    if 500 <= reply.status <= 599:
        return WinsockError(WSAError.WSATRY_AGAIN, message)
    return WinsockError(WSAError.WSANO_RECOVERY, message)


def _entry(doc: Any, what: str) -> Entry:
    """An entry of the backend, as the e-mail example's Entry."""
    try:
        if not isinstance(doc, dict):
            raise TypeError("not an object")
        name, version, addresses = doc["address"], doc["version"], doc.get("addresses", [])
        if not isinstance(name, str) or not isinstance(version, int) or version < 1:
            raise TypeError("address or version")
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise TypeError("addresses")
        return Entry(
            name,
            MISTATUS[doc["status"]],
            [_remote(a) for a in addresses],
            owner=0,
            version=version,
            changed=version > 1,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WinsockError(WSAError.WSANO_RECOVERY, f"{what}: not an entry ({exc})") from None


class HttpPresenceDirectory(Provider):
    """An NS_EMAIL presence directory whose entries live in an HTTP presence
    service (``url``; else ``NSPV2_PRESENCE_URL``; else an embedded one).

    ``timeout``: seconds for one backend request (keep two of them under
    ``async_timeout``: a wildcard's first NextEx makes two).
    """

    provider_id = HTTP_PRESENCE_PROVIDER_ID
    namespace = NS.NS_EMAIL
    name = "nspv2 HTTP presence (asyncio)"
    check_registrations = ("dave@example.net", "erin@example.net")
    check_queries = ("alice@example.net", "*@example.net")
    #: The primary provider for example.net (an application, no wildcard).
    install_blob = InstallationBlob(
        NAPI_PROVIDER_TYPE.ProviderType_Application,
        level=NAPI_PROVIDER_LEVEL.ProviderLevel_Primary,
        domains=["example.net"],
    ).pack()
    #: Seconds for one backend request.
    request_timeout: ClassVar[float] = 1.5

    def __init__(self, url: str | None = None, *, timeout: float | None = None) -> None:
        url = url or os.environ.get(URL_VARIABLE) or None
        self._timeout = self.request_timeout if timeout is None else timeout
        #: The external backend's client (None: the embedded backend's).
        self._external: PresenceHttp | None = PresenceHttp(url, self._timeout) if url else None
        # The embedded backend, started on the provider's loop at first use
        # (one start shared by concurrent first calls), closed by _on_close.
        # The lock orders its start on the loop against a close on any thread.
        self._state_lock = threading.Lock()
        self._embedded: PresenceBackend | None = None
        self._embedded_loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Future[PresenceHttp] | None = None
        self._closing = False
        #: Owners whose sign-out failed at their session's end (the backend
        #: unreachable): retried when a later session ends.
        self._unsigned: set[str] = set()
        #: Owners in the backend: this instance's prefix and a session's token.
        self._owner_prefix = f"nspv2/{uuid.uuid4().hex[:12]}/"

    # -- the backend ----------------------------------------------------------------

    @property
    def backend_url(self) -> str | None:
        """The backend's URL (None: the embedded one, not running)."""
        if self._external is not None:
            return self._external.url
        embedded = self._embedded
        return embedded.url if embedded is not None and embedded.serving else None

    @property
    def embedded_backend(self) -> PresenceBackend | None:
        """The embedded backend while it runs (None with an external one)."""
        return self._embedded

    async def _client(self) -> PresenceHttp:
        """The backend's client; starts the embedded backend on this loop at
        first use (shielded: a call cancelled meanwhile does not cancel the
        start that other calls wait for)."""
        if self._external is not None:
            return self._external
        starting = self._starting
        if (
            starting is None
            or starting.get_loop() is not asyncio.get_running_loop()
            or (starting.done() and (starting.cancelled() or starting.exception() is not None))
        ):  # first use, a new loop, or the last start failed: start (again)
            starting = self._starting = asyncio.ensure_future(self._start_embedded())
        return await asyncio.shield(starting)

    async def _start_embedded(self) -> PresenceHttp:
        backend = PresenceBackend(seed=True)
        with self._state_lock:
            if self._closing:
                raise WinsockError(WSAError.WSASYSNOTREADY, "the provider is closing")
            self._embedded, self._embedded_loop = backend, asyncio.get_running_loop()
        try:
            await backend.start()
        except BaseException as exc:  # the next call starts one again
            with self._state_lock:
                if self._embedded is backend:
                    self._embedded = self._embedded_loop = None
            if isinstance(exc, Exception):
                raise WinsockError(
                    WSAError.WSATRY_AGAIN, f"the embedded presence backend did not start: {exc!r}"
                ) from exc
            raise
        with self._state_lock:
            kept = self._embedded is backend
        if not kept:  # the provider closed while it started
            await backend.close()
            raise WinsockError(WSAError.WSASYSNOTREADY, "the provider is closing")
        log.info("%s: embedded presence backend at %s", self.display_name, backend.url)
        return PresenceHttp(backend.url, self._timeout)

    def _on_close(self) -> None:
        # The embedded backend first, on its loop (still running until the
        # scaffold's close below): nothing is left listening. The sessions
        # ended next have nothing to sign out of: its users went with it.
        with self._state_lock:
            self._closing = True
            backend, loop = self._embedded, self._embedded_loop
            self._embedded = self._embedded_loop = None
            self._starting = None
        try:
            if backend is not None and loop is not None:
                self._close_embedded(backend, loop)
            super()._on_close()
        finally:
            with self._state_lock:
                self._closing = False  # a table built again starts a new one

    def _close_embedded(self, backend: PresenceBackend, loop: asyncio.AbstractEventLoop) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(backend.close(), loop)
        except RuntimeError:  # the loop is closed: its sockets went with it
            return
        try:
            running_here = asyncio.get_running_loop() is loop
        except RuntimeError:
            running_here = False
        if running_here:
            return  # closing from the loop itself: it closes once this returns
        try:
            future.result(timeout=self.async_hook_timeout)
        except BaseException as exc:
            log.warning("%s: closing the embedded presence backend: %r", self.display_name, exc)

    def _owner(self, session: Session) -> str:
        return f"{self._owner_prefix}{session.token:x}"

    # -- the provider ---------------------------------------------------------------

    async def lookup(
        self, session: Session, restrictions: QuerySet, flags: int
    ) -> AsyncIterator[QuerySet]:
        if restrictions.namespace not in (NS.NS_EMAIL, NS.NS_ALL):
            raise WinsockError(
                WSAError.WSAEINVAL, f"namespace {restrictions.namespace} is not NS_EMAIL"
            )
        name = restrictions.service_instance_name
        if not name or not (_ADDRESS.fullmatch(name) or _WILDCARD.fullmatch(name)):
            raise WinsockError(WSAError.WSAEINVAL, f"{name!r} is neither an address nor *@domain")
        http = await self._client()
        if not name.startswith("*@"):
            one = await self._fetch(http, name, flags)
            if one is None:
                raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
            yield one
            return
        listing = await http.request("GET", f"/v1/presence?domain={name[2:]}")
        if listing.status != 200:
            raise _status_error(listing, f"listing {name}")
        names = listing.body.get("addresses") if isinstance(listing.body, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise WinsockError(WSAError.WSANO_RECOVERY, f"listing {name}: not a list of names")
        if not names:
            raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
        for each in names:
            found = await self._fetch(http, each, flags)
            if found is not None:  # else signed out since the listing
                yield found

    async def _fetch(self, http: PresenceHttp, name: str, flags: int) -> QuerySet | None:
        """``name``'s entry as a result; None if it is not signed in."""
        reply = await http.request("GET", f"/v1/presence/{name}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise _status_error(reply, f"looking {name} up")
        return _entry(reply.body, f"looking {name} up").as_queryset(flags, self.provider_id)

    async def set_service(
        self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
    ) -> None:
        name = reg_info.service_instance_name or ""
        if reg_info.namespace not in (NS.NS_EMAIL, NS.NS_ALL):
            raise WinsockError(
                WSAError.WSAEINVAL, f"namespace {reg_info.namespace} is not NS_EMAIL"
            )
        if not _ADDRESS.fullmatch(name):
            raise WinsockError(WSAError.WSAEINVAL, f"{name!r} is not an e-mail address")
        names: dict[str, str] = session.data.setdefault("names", {})
        http = await self._client()
        owner = self._owner(session)
        if operation is WSAESETSERVICEOP.RNRSERVICE_REGISTER:
            status = (
                decode_presence(reg_info.blob)
                if reg_info.blob is not None
                else MISTATUS.MISTATUS_ONLINE
            )
            if status not in SIGNED_IN_STATES:
                raise PresenceError(
                    SESSION_RESULT.SR_SESSION_STATE_INVALID, f"cannot sign in as {status.name}"
                )
            body = {
                "status": status.name,
                "owner": owner,
                "addresses": [str(c.remote) for c in reg_info.cs_addrs if c.remote is not None],
            }
            # Recorded before the request: if the call is cancelled after the
            # backend acted, the session's end still signs the name out.
            known = _key(name) in names
            names[_key(name)] = name
            try:
                reply = await http.request("PUT", f"/v1/presence/{name}", body)
            except WinsockError:
                raise  # outcome unknown: keep it, the session's end signs it out
            if reply.status in (200, 201):
                return
            if not known:
                names.pop(_key(name), None)
            if reply.status == 409:
                raise PresenceError(
                    SESSION_RESULT.SR_APP_ALREADY_REGISTERED,
                    f"{name} is signed in by another client",
                )
            raise _status_error(reply, f"signing {name} in")
        reply = await http.request("DELETE", f"/v1/presence/{name}?owner={owner}")
        if reply.status in (204, 404):
            names.pop(_key(name), None)
        if reply.status == 204:
            return
        if reply.status == 404:
            raise PresenceError(SESSION_RESULT.SR_APP_NOT_REGISTERED, f"{name} is not signed in")
        if reply.status == 409:
            raise PresenceError(
                SESSION_RESULT.SR_NOT_INVITER, f"{name} was signed in by another client"
            )
        raise _status_error(reply, f"signing {name} out")

    async def cleanup(self, session: Session) -> None:
        await self._sign_out_session(session)

    async def client_session_rundown(self, session: Session) -> None:
        await self._sign_out_session(session)

    async def _sign_out_session(self, session: Session) -> None:
        """Sign the session's names out: one request for all of them
        (``DELETE /v1/presence?owner=...``). If the backend cannot be reached
        (or fails), it is logged and the owner kept (at most
        ``_MAX_UNSIGNED``): a later session's end asks again. The session
        has ended whatever the backend says."""
        names: dict[str, str] = session.data.get("names", {})
        owners = [self._owner(session)] if names else []
        owners += sorted(self._unsigned)
        names.clear()
        session.data["signed_out"] = signed_out = []
        if not owners or (self._closing and self._external is None):
            return  # closing: the embedded backend is gone, and its users with it
        try:
            http = await self._client()
        except WinsockError as exc:
            log.warning("%s: signing out: %s", self.display_name, exc)
            self._keep_unsigned(owners)
            return
        for at, owner in enumerate(owners):
            deleted = await self._sign_out_owner(http, owner)
            if deleted is None:  # the backend is down: keep this one and the rest
                self._keep_unsigned(owners[at:])
                return
            self._unsigned.discard(owner)
            signed_out += deleted

    def _keep_unsigned(self, owners: list[str]) -> None:
        for owner in owners:
            if len(self._unsigned) >= _MAX_UNSIGNED:
                log.warning("%s: %s left signed in (too many to retry)", self.display_name, owner)
            else:
                self._unsigned.add(owner)

    async def _sign_out_owner(self, http: PresenceHttp, owner: str) -> list[str] | None:
        """Every name ``owner`` holds, signed out: the names; None if the
        backend could not be asked (logged)."""
        try:
            reply = await http.request("DELETE", f"/v1/presence?owner={owner}")
        except WinsockError as exc:
            log.warning("%s: signing %s out: %s", self.display_name, owner, exc)
            return None
        deleted = reply.body.get("deleted") if isinstance(reply.body, dict) else None
        if reply.status != 200 or not isinstance(deleted, list):
            log.warning("%s: signing %s out: %r", self.display_name, owner, reply)
            return None if reply.status >= 500 else []
        return [n for n in deleted if isinstance(n, str)]

"""An NS_EMAIL presence directory, written with ``nspv2.Provider``.

Clients sign users in and out with WSASetServiceW and find them with
WSALookupServiceBegin/Next/End. Everything here is specified in
``docs/email-example.md``; ``native_stub/src/ref_provider.c`` implements
the same behaviour in C, and one table of cases runs against both.

Registering (RNRSERVICE_REGISTER) ``alice@example.com`` with CS addresses
and a presence blob signs her in; registering again updates her entry
(SERVICE_MULTIPLE adds addresses instead of replacing them);
RNRSERVICE_DEREGISTER keeps the name and drops addresses;
RNRSERVICE_DELETE signs her out, ``IMessenger::Signout`` style: lookups
already in flight see MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER, new ones
do not find her. A client session's names are signed out when it ends.
:func:`sign_in` and :func:`sign_out` are the client's side of these, for
an in-process ClientSession or an :class:`nspv2.Client`.

The C twin (``native_stub/src/ref_provider.c``) uses the same names for
the same operations; docs/email-example.md ("Python and C side by side")
lists the pairs. Both take a lookup's entries under the lock at Begin and
snapshot each one, again under the lock, when NextEx reaches it; session
tokens and lookup handles come from one counter in both.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import struct
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..provider.queryset import CsAddr, QuerySet, SocketAddress, Version
from ..provider.registry import Session
from ..sdk.msgrpriv import SESSION_RESULT
from ..sdk.msgrua import MISTATUS, SignoutResult
from ..sdk.nsemail import NAPI_PROVIDER_LEVEL, NAPI_PROVIDER_TYPE, InstallationBlob
from ..sdk.winsock2 import LUP, NS, RESULT_IS, SERVICE_MULTIPLE, WSAESETSERVICEOP, WSAError

__all__ = [
    "BLOB_MAGIC",
    "BLOB_SIZE",
    "BLOB_VERSION",
    "EMAIL_PROVIDER_ID",
    "SESSION_RESULT_TO_WSA",
    "SIGNED_IN_STATES",
    "EmailDirectory",
    "Entry",
    "PresenceClient",
    "PresenceError",
    "decode_presence",
    "encode_presence",
    "sign_in",
    "sign_out",
]

#: The example provider's GUID.
EMAIL_PROVIDER_ID = uuid.UUID("6e737032-656d-4169-8c00-707265736e63")

#: Presence blob, version 1: b"NSPP", u16 version, u16 reserved (0),
#: u32 MISTATUS; little-endian, 12 bytes.
BLOB_MAGIC = b"NSPP"
BLOB_VERSION = 1
_BLOB = struct.Struct("<4sHHI")
BLOB_SIZE = _BLOB.size

#: States a user can sign in with (the others are offline or local-only).
SIGNED_IN_STATES = frozenset(
    {
        MISTATUS.MISTATUS_ONLINE,
        MISTATUS.MISTATUS_INVISIBLE,
        MISTATUS.MISTATUS_BUSY,
        MISTATUS.MISTATUS_BE_RIGHT_BACK,
        MISTATUS.MISTATUS_IDLE,
        MISTATUS.MISTATUS_AWAY,
        MISTATUS.MISTATUS_ON_THE_PHONE,
        MISTATUS.MISTATUS_OUT_TO_LUNCH,
        # Office Communicator 2007's states
        MISTATUS.MISTATUS_IN_A_MEETING,
        MISTATUS.MISTATUS_OUT_OF_OFFICE,
        MISTATUS.MISTATUS_DO_NOT_DISTURB,
        MISTATUS.MISTATUS_IN_A_CONFERENCE,
        MISTATUS.MISTATUS_ALLOW_URGENT_INTERRUPTIONS,
        MISTATUS.MISTATUS_MAY_BE_AVAILABLE,
        MISTATUS.MISTATUS_CUSTOM,
    }
)

#: The Winsock error a client receives for each SESSION_RESULT the example uses.
SESSION_RESULT_TO_WSA: dict[SESSION_RESULT, WSAError] = {
    SESSION_RESULT.SR_APP_ALREADY_REGISTERED: WSAError.WSAEALREADY,
    SESSION_RESULT.SR_APP_NOT_REGISTERED: WSAError.WSASERVICE_NOT_FOUND,
    SESSION_RESULT.SR_NOT_INVITER: WSAError.WSAEACCES,
    SESSION_RESULT.SR_INVITED_SELF: WSAError.WSAEINVAL,
    SESSION_RESULT.SR_SESSION_STATE_INVALID: WSAError.WSAEINVAL,
    SESSION_RESULT.SR_INVITATION_DECLINED: WSAError.WSAEREFUSED,
}

_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.ASCII)
_WILDCARD = re.compile(r"\*@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.ASCII)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class PresenceError(WinsockError):
    """A failure with its SESSION_RESULT; ``code`` is the Winsock error."""

    def __init__(self, result: SESSION_RESULT, message: str) -> None:
        self.result = result
        super().__init__(SESSION_RESULT_TO_WSA[result], f"{result.name}: {message}")

    def __reduce__(self) -> tuple[type[PresenceError], tuple[SESSION_RESULT, str]]:
        return (type(self), (self.result, self.message or ""))


def encode_presence(status: MISTATUS) -> bytes:
    """The version-1 presence blob for ``status``."""
    return _BLOB.pack(BLOB_MAGIC, BLOB_VERSION, 0, int(status))


def decode_presence(blob: bytes) -> MISTATUS:
    """Read a presence blob; WSAEINVAL for anything but a valid version 1."""
    if len(blob) != BLOB_SIZE:
        raise WinsockError(
            WSAError.WSAEINVAL, f"presence blob is {len(blob)} bytes, not {BLOB_SIZE}"
        )
    magic, version, reserved, value = _BLOB.unpack(blob)
    if magic != BLOB_MAGIC or version != BLOB_VERSION or reserved:
        raise WinsockError(WSAError.WSAEINVAL, "not a version 1 presence blob")
    try:
        return MISTATUS(value)
    except ValueError:
        raise WinsockError(WSAError.WSAEINVAL, f"{value:#x} is not a MISTATUS") from None


class PresenceClient(Protocol):
    """What :func:`sign_in` and :func:`sign_out` need: a client session
    (:class:`nspv2.host.ClientSession` in process, :class:`nspv2.Client`
    in a client process)."""

    def set_service(self, reg_info: QuerySet, operation: int, flags: int = 0) -> None: ...


def _remote(address: CsAddr | SocketAddress | str) -> CsAddr:
    if isinstance(address, CsAddr):
        return address
    if isinstance(address, SocketAddress):
        return CsAddr(None, address)
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 0xFFFF:
        raise ValueError(f"{address!r} is not ADDRESS:PORT")
    return CsAddr(None, SocketAddress.parse(host.strip("[]"), int(port)))


def sign_in(
    client: PresenceClient,
    name: str,
    status: MISTATUS = MISTATUS.MISTATUS_ONLINE,
    addresses: Iterable[CsAddr | SocketAddress | str] = (),
    *,
    multiple: bool = False,
) -> None:
    """Sign ``name`` in (RNRSERVICE_REGISTER with the presence blob) in
    ``client``'s session; signing in again updates the entry. ``addresses``:
    CS addresses, socket addresses or ``"ADDRESS:PORT"`` texts (remote
    addresses); ``multiple`` adds them to the entry's (SERVICE_MULTIPLE)
    instead of replacing them. The name is signed out when the session
    ends, however it ends."""
    reg = QuerySet(
        name,
        cs_addrs=tuple(_remote(a) for a in addresses),
        blob=encode_presence(status),
    )
    client.set_service(
        reg, WSAESETSERVICEOP.RNRSERVICE_REGISTER, SERVICE_MULTIPLE if multiple else 0
    )


def sign_out(client: PresenceClient, name: str) -> None:
    """Sign ``name`` out (RNRSERVICE_DELETE); only the session that signed
    it in may (else WinsockError, SR_APP_NOT_REGISTERED's code)."""
    client.set_service(QuerySet(name), WSAESETSERVICEOP.RNRSERVICE_DELETE)


def _key(name: str) -> str:
    """Names compare case-insensitively in ASCII only (as the C provider does)."""
    return name.translate(_ASCII_LOWER)


@dataclass(eq=False)
class Entry:
    """One signed-in user."""

    name: str
    status: MISTATUS
    addresses: list[CsAddr]
    owner: int  # the client session token that signed the user in
    version: int = 1
    changed: bool = False  # updated since signing in
    signing_out: bool = False

    def as_queryset(self, flags: int, provider_id: uuid.UUID) -> QuerySet:
        """The lookup result, fields chosen by the LUP_RETURN_* flags."""
        status = (
            MISTATUS.MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER if self.signing_out else self.status
        )
        if self.signing_out:
            output = RESULT_IS.RESULT_IS_DELETED
        elif self.changed:
            output = RESULT_IS.RESULT_IS_CHANGED
        else:
            output = RESULT_IS.RESULT_IS_ADDED
        return QuerySet(
            service_instance_name=self.name if flags & LUP.LUP_RETURN_NAME else None,
            version=Version(self.version) if flags & LUP.LUP_RETURN_VERSION else None,
            comment=status.name if flags & LUP.LUP_RETURN_COMMENT else None,
            namespace=NS.NS_EMAIL,
            provider_id=provider_id,
            cs_addrs=tuple(self.addresses) if flags & LUP.LUP_RETURN_ADDR else (),
            output_flags=int(output),
            blob=encode_presence(status) if flags & LUP.LUP_RETURN_BLOB else None,
        )


@dataclass
class _Invitation:
    inviter: str
    invitee: str


class EmailDirectory(Provider):
    """An NS_EMAIL presence directory (thread-safe)."""

    provider_id = EMAIL_PROVIDER_ID
    namespace = NS.NS_EMAIL
    name = "nspv2 e-mail presence"
    #: What ``python -m nspv2 check`` signs in and looks up.
    check_registrations = ("alice@example.com", "bob@example.com")
    check_queries = ("alice@example.com", "*@example.com")
    #: Installed with this NS_EMAIL installation blob: the primary provider
    #: for example.com and example.org (an application, no wildcard).
    install_blob = InstallationBlob(
        NAPI_PROVIDER_TYPE.ProviderType_Application,
        level=NAPI_PROVIDER_LEVEL.ProviderLevel_Primary,
        domains=["example.com", "example.org"],
    ).pack()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        #: The most recent invitations (bounded).
        self.invitations: collections.deque[_Invitation] = collections.deque(maxlen=256)

    # -- the directory as Python sees it ----------------------------------------------

    def entries(self) -> list[Entry]:
        """Signed-in users, sorted by name: copies taken under the lock."""
        with self._lock:
            return [
                dataclasses.replace(e, addresses=list(e.addresses))
                for e in sorted(self._entries.values(), key=lambda e: _key(e.name))
            ]

    def presence(self, name: str) -> MISTATUS:
        """A user's presence; MISTATUS_OFFLINE if not signed in."""
        with self._lock:
            entry = self._entries.get(_key(name))
            return entry.status if entry else MISTATUS.MISTATUS_OFFLINE

    def sign_in(
        self,
        owner: int,
        name: str,
        status: MISTATUS,
        addresses: list[CsAddr],
        multiple: bool = False,
    ) -> Entry:
        """Sign ``name`` in (or update it) for the client session ``owner``."""
        if not _ADDRESS.fullmatch(name):
            raise WinsockError(WSAError.WSAEINVAL, f"{name!r} is not an e-mail address")
        if status not in SIGNED_IN_STATES:
            raise PresenceError(
                SESSION_RESULT.SR_SESSION_STATE_INVALID, f"cannot sign in as {status.name}"
            )
        with self._lock:
            entry = self._entries.get(_key(name))
            if entry is None:
                entry = Entry(name, status, list(addresses), owner)
                self._entries[_key(name)] = entry
                return entry
            if entry.owner != owner:
                raise PresenceError(
                    SESSION_RESULT.SR_APP_ALREADY_REGISTERED,
                    f"{name} is signed in by another client",
                )
            entry.status = status
            if multiple:
                entry.addresses.extend(a for a in addresses if a not in entry.addresses)
            else:
                entry.addresses = list(addresses)
            entry.version += 1
            entry.changed = True
            return entry

    def deregister(self, owner: int, name: str, addresses: list[CsAddr]) -> Entry:
        """Keep ``name`` signed in but remove addresses (all, if none given)."""
        with self._lock:
            entry = self._owned(owner, name)
            if addresses:
                entry.addresses = [a for a in entry.addresses if a not in addresses]
            else:
                entry.addresses = []
            entry.version += 1
            entry.changed = True
            return entry

    def sign_out(self, owner: int | None, name: str) -> SignoutResult:
        """Sign ``name`` out (``owner`` None: whoever signed it in).

        Returns ``SignoutResult.MSGR_E_NOT_LOGGED_ON`` if it was not signed
        in, as ``IMessenger::Signout`` does; raises PresenceError
        (SR_NOT_INVITER) if another client signed it in.
        """
        with self._lock:
            entry = self._entries.get(_key(name))
            if entry is None:
                return SignoutResult.MSGR_E_NOT_LOGGED_ON
            if owner is not None and entry.owner != owner:
                raise PresenceError(
                    SESSION_RESULT.SR_NOT_INVITER, f"{name} was signed in by another client"
                )
            # Lookups that already hold the entry see it disconnecting; new
            # lookups no longer find it.
            entry.signing_out = True
            del self._entries[_key(name)]
            return SignoutResult.S_OK

    def invite(self, owner: int, inviter: str, invitee: str) -> None:
        """Record an invitation; SESSION_RESULT failures as PresenceError."""
        with self._lock:
            if _key(inviter) == _key(invitee):
                raise PresenceError(SESSION_RESULT.SR_INVITED_SELF, f"{inviter} invited itself")
            self._owned(owner, inviter)
            target = self._entries.get(_key(invitee))
            if target is None:
                raise PresenceError(
                    SESSION_RESULT.SR_APP_NOT_REGISTERED, f"{invitee} is not signed in"
                )
            if target.status is MISTATUS.MISTATUS_INVISIBLE:
                raise PresenceError(
                    SESSION_RESULT.SR_INVITATION_DECLINED, f"{invitee} is not accepting"
                )
            self.invitations.append(_Invitation(inviter, invitee))

    def _owned(self, owner: int, name: str) -> Entry:
        entry = self._entries.get(_key(name))
        if entry is None:
            raise PresenceError(SESSION_RESULT.SR_APP_NOT_REGISTERED, f"{name} is not signed in")
        if entry.owner != owner:
            raise PresenceError(
                SESSION_RESULT.SR_NOT_INVITER, f"{name} was signed in by another client"
            )
        return entry

    def _sign_out_session(self, session: Session) -> None:
        with self._lock:
            mine = [e for e in self._entries.values() if e.owner == session.token]
            for entry in mine:
                entry.signing_out = True
                del self._entries[_key(entry.name)]
        session.data["signed_out"] = [e.name for e in mine]

    def _snapshot(self, entry: Entry, flags: int) -> QuerySet:
        """The result for ``entry`` as it is now, read under the lock."""
        with self._lock:
            return entry.as_queryset(flags, self.provider_id)

    # -- the provider ---------------------------------------------------------------

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        if restrictions.namespace not in (NS.NS_EMAIL, NS.NS_ALL):
            raise WinsockError(
                WSAError.WSAEINVAL, f"namespace {restrictions.namespace} is not NS_EMAIL"
            )
        name = restrictions.service_instance_name
        if not name or not (_ADDRESS.fullmatch(name) or _WILDCARD.fullmatch(name)):
            raise WinsockError(WSAError.WSAEINVAL, f"{name!r} is neither an address nor *@domain")
        with self._lock:
            if name.startswith("*@"):
                domain = _key(name[1:])
                found = [e for k, e in sorted(self._entries.items()) if k.endswith(domain)]
            else:
                one = self._entries.get(_key(name))
                found = [one] if one else []
        if not found:
            raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
        # Entries are read (under the lock) when each NextEx runs, so a
        # sign-out in between shows as MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER.
        return (self._snapshot(entry, flags) for entry in found)

    def set_service(
        self, session: Session, reg: QuerySet, op: WSAESETSERVICEOP, flags: int
    ) -> None:
        name = reg.service_instance_name or ""
        if reg.namespace not in (NS.NS_EMAIL, NS.NS_ALL):
            raise WinsockError(WSAError.WSAEINVAL, f"namespace {reg.namespace} is not NS_EMAIL")
        if op is WSAESETSERVICEOP.RNRSERVICE_REGISTER:
            if reg.query_string and reg.query_string.startswith("invite="):
                self.invite(session.token, name, reg.query_string[len("invite=") :])
                return
            status = decode_presence(reg.blob) if reg.blob is not None else MISTATUS.MISTATUS_ONLINE
            self.sign_in(
                session.token, name, status, list(reg.cs_addrs), bool(flags & SERVICE_MULTIPLE)
            )
        elif op is WSAESETSERVICEOP.RNRSERVICE_DEREGISTER:
            self.deregister(session.token, name, list(reg.cs_addrs))
        else:
            if self.sign_out(session.token, name) is SignoutResult.MSGR_E_NOT_LOGGED_ON:
                raise PresenceError(
                    SESSION_RESULT.SR_APP_NOT_REGISTERED, f"{name} is not signed in"
                )

    def cleanup(self, session: Session) -> None:
        self._sign_out_session(session)

    def client_session_rundown(self, session: Session) -> None:
        self._sign_out_session(session)

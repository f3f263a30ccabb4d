import uuid

from nspv2 import CsAddr, Provider, QuerySet, SocketAddress, WinsockError, WSAError


class Presence(Provider):
    provider_id = uuid.UUID("c0ffee00-1111-4222-8333-444455556666")
    check_queries = ("alice@example.com",)  # what `nspv2 check` looks up

    def __init__(self):
        self.users = {"alice@example.com": SocketAddress.parse("192.0.2.10", 5060)}
        self.watchers = {}

    def startup(self, session):  # NSPv2Startup
        self.watchers[session.token] = []

    def lookup(self, session, restrictions, flags):  # NSPv2LookupServiceBegin
        name = restrictions.service_instance_name or ""
        if name not in self.users:
            raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, name)
        self.watchers[session.token].append(name)
        yield QuerySet(
            name,
            comment="MISTATUS_ONLINE",  # one result per NextEx
            cs_addrs=(CsAddr(remote=self.users[name]),),
        )

    def cleanup(self, session):  # NSPv2Cleanup
        del self.watchers[session.token]

    def client_session_rundown(self, session):  # NSPv2ClientSessionRundown
        del self.watchers[session.token]

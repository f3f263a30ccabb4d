from nspv2 import QuerySet, WSAError
from nspv2.sdk.winsock2 import WSAESETSERVICEOP
from nspv2.testing.pytest_plugin import LoadNative, MakeHarness


def test_rundown_alone(nspv2_native: LoadNative, nspv2_harness: MakeHarness) -> None:
    provider = nspv2_native("email_provider.so")
    h = nspv2_harness(provider.tables[0])
    token = h.startup().value
    register = WSAESETSERVICEOP.RNRSERVICE_REGISTER
    assert h.set_service(token, QuerySet("dan@example.com"), register).ok
    h.rundown(token)
    gone = h.begin(h.startup().value, QuerySet("dan@example.com"))
    assert gone.code == WSAError.WSASERVICE_NOT_FOUND

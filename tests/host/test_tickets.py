"""Session resumption of ``l7ctl tlsd`` (l7ctl/tickets.py): one ticket key
for every worker, derived alike by each, rotated, the past keys dropped.

Handshakes here run between memory buffers (ssl.MemoryBIO): no socket, so
OpenSSL never tries kernel TLS on this machine.  The guest's tests
(tests/kernel/test_tls.py, test_install.py) resume over real sockets,
through kernel TLS and the module.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from test_rules_tls import certs, tls_service  # noqa: F401  (certs: a fixture)

from l7ctl import libssl, tickets, tlsd

SEED = bytes(range(32))


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> ssl.SSLObject:
    """A handshake and one byte of data (which brings TLS 1.3's tickets to
    the client); the client's end."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="www.example.com", session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = True
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                done = False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done:
            break
    else:
        pytest.fail("the handshake did not end")
    server.write(b"x")
    c_in.write(s_out.read())
    assert client.read(1) == b"x"
    return client


def client_context(version: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[f"TLSv{version.replace('.', '_')}"]
    return ctx


def worker(rules: Path, keys: tickets.TicketKeys | None) -> ssl.SSLContext:
    """A worker's daemon (its own contexts, as after the fork): the first
    context of the service, the one a handshake starts on."""
    daemon = tlsd.Daemon(rules, tlsd.Limits(), log=lambda _: None, ticket_keys=keys)
    (svc,) = daemon.load().values()
    return svc.contexts[0][1]


@pytest.fixture
def rules(tmp_path: Path, certs: dict[str, tuple[Path, Path]]) -> Path:  # noqa: F811
    p = tmp_path / "site.rules"
    p.write_text(tls_service(certs))
    return p


def test_the_key_chain_is_the_same_in_every_worker_and_moves_on() -> None:
    a = tickets.TicketKeys(SEED, 300, 1000.0)
    b = tickets.TicketKeys(SEED, 300, 1000.0)
    first = a.blob()
    assert len(first) == tickets.KEYS_LEN and first == b.blob()
    assert a.rotate_at == 1300.0
    assert not a.advance(1299.9) and a.blob() == first
    assert a.advance(1300.0) and a.rotate_at == 1600.0
    second = a.blob()
    assert second != first
    # a worker that wakes later catches up to the same key
    assert b.advance(1650.0) and b.period == 2 and a.advance(1650.0)
    assert a.blob() == b.blob() != second
    assert not a.advance(1000.0) and a.period == 2  # never back
    assert tickets.TicketKeys(bytes(32), 300, 1000.0).blob() != first
    for bad in (0, tickets.LIFETIME_MAX + 1):
        with pytest.raises(ValueError):
            tickets.TicketKeys(SEED, bad, 0.0)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_a_session_resumes_on_another_worker_until_the_key_is_rotated(
    rules: Path, version: str
) -> None:
    start = 0.0  # long ago: the workers start in a later period, alike
    w1 = worker(rules, tickets.TicketKeys(SEED, 300, start))
    w2 = worker(rules, tickets.TicketKeys(SEED, 300, start))
    client = client_context(version)
    first = handshake(w1, client)
    assert not first.session_reused and first.session is not None
    assert first.session.has_ticket
    if version == "1.3":
        assert first.session.ticket_lifetime_hint == 300
    again = handshake(w2, client, first.session)
    assert again.session_reused and again.version() == f"TLSv{version}"
    # another seed: no resumption, a full handshake that works
    other = worker(rules, tickets.TicketKeys(bytes(32), 300, start))
    full = handshake(other, client, first.session)
    assert not full.session_reused


def test_a_rotated_key_no_longer_opens_the_tickets_of_the_last(rules: Path) -> None:
    keys = tickets.TicketKeys(SEED, 300, 0.0)
    daemon = tlsd.Daemon(rules, tlsd.Limits(), log=lambda _: None, ticket_keys=keys)
    daemon.services = daemon.load()
    ctx = next(iter(daemon.services.values())).contexts[0][1]
    client = client_context("1.3")
    first = handshake(ctx, client)
    assert handshake(ctx, client, first.session).session_reused
    daemon._timers(keys.rotate_at)  # the daemon's own clock step: installs the next key
    assert not handshake(ctx, client, first.session).session_reused
    newer = handshake(ctx, client)
    assert handshake(ctx, client, newer.session).session_reused


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_without_tickets_nothing_resumes(rules: Path, version: str) -> None:
    ctx = worker(rules, None)
    client = client_context(version)
    first = handshake(ctx, client)
    assert first.session is None or not first.session.has_ticket
    if first.session is not None:
        assert not handshake(ctx, client, first.session).session_reused


def test_the_context_pointer_is_checked_against_openssl(rules: Path) -> None:
    ctx = worker(rules, tickets.TicketKeys(SEED, 300, 0.0))
    before = ctx.options
    assert libssl.ssl_ctx(ctx) != 0
    assert ctx.options == before  # the check's change of options is undone

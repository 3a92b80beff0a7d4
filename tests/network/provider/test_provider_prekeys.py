"""The provider's prekey desk over the client protocol: publishing, handing out bundles, refusals."""

from __future__ import annotations

import anyio
import pytest

from anonmail.clients.provider import lookup_bundle
from anonmail.core.prekeys import PrekeyUpload, make_one_time_prekey, make_pq_prekey, make_signed_prekey
from anonmail.errors import ProtocolError
from anonmail.provider.prekeys import MAX_ONE_TIME_HELD, ONE_TIME_BURST, ONE_TIME_PER_HOUR, OneTimeBudget
from tests.network.provider.test_provider import T0, User, start

pytestmark = [pytest.mark.network, pytest.mark.virtual_time]


def upload_of(user: User, one_time_ids, *, identity=None, not_after=T0 + 86400) -> PrekeyUpload:
    signer = identity or user.identity
    _, spk = make_signed_prekey(signer, 1, not_after=not_after)
    _, pq = make_pq_prekey(signer, 2, not_after=not_after)
    keys = tuple(make_one_time_prekey(i)[1] for i in one_time_ids)
    return PrekeyUpload(user.identity.public, spk, pq, keys)


@pytest.mark.anyio
async def test_each_one_time_prekey_is_handed_out_once_then_none(tmp_path):
    async with start(tmp_path) as net:
        alice, bob = User("alpha"), User("beta")
        b = await bob.connect(net)
        upload = upload_of(bob, [10, 11])
        assert await b.publish_prekeys(upload) == 2
        assert await b.publish_prekeys(upload) == 2  # the same ids again add nothing
        router, where = net.client_router("alice"), net.provider_address("beta")
        got = [await lookup_bundle(router, where, bob.address) for _ in range(3)]
        assert [g.one_time.key_id if g.one_time else None for g in got] == [10, 11, None]
        for g in got:
            g.verify(bob.identity.public, now=int(T0))
            assert g.signed == upload.signed and g.pq == upload.pq
        assert await b.publish_prekeys(upload_of(bob, [12])) == 1  # refilled
        with pytest.raises(ProtocolError) as info:
            await lookup_bundle(router, net.provider_address("alpha"), alice.address)
        assert info.value.reason == "no_prekeys"
        await b.aclose()


@pytest.mark.anyio
async def test_attack_prekeys_signed_by_someone_else_or_expired_are_refused(tmp_path):
    async with start(tmp_path) as net:
        bob, mallory = User("beta"), User("beta")
        b = await bob.connect(net)
        for bad in (upload_of(bob, [1], identity=mallory.identity), upload_of(bob, [1], not_after=T0 - 1)):
            with pytest.raises(ProtocolError) as info:
                await b.publish_prekeys(bad)
            assert info.value.reason == "bad_prekeys"
        m = await mallory.connect(net)
        with pytest.raises(ProtocolError):  # mallory publishes bob's (validly signed) prekeys as hers
            await m.publish_prekeys(upload_of(bob, [1]))
        with pytest.raises(ProtocolError) as info:
            await lookup_bundle(net.client_router("x"), net.provider_address("beta"), bob.address)
        assert info.value.reason == "no_prekeys"
        await b.aclose()
        await m.aclose()


@pytest.mark.anyio
async def test_one_time_prekeys_held_are_bounded(tmp_path):
    async with start(tmp_path) as net:
        bob = User("beta")
        b = await bob.connect(net)
        held = 0
        for batch in range(MAX_ONE_TIME_HELD // 200 + 1):
            held = await b.publish_prekeys(upload_of(bob, range(batch * 200, batch * 200 + 200)))
        assert held == MAX_ONE_TIME_HELD
        await b.aclose()


@pytest.mark.anyio
async def test_attack_a_stranger_cannot_drain_a_users_one_time_prekeys(tmp_path):
    """Attack: anonymous bundle requests in a loop would take every one-time prekey bob has (and make his
    agent refill again and again). Past the burst, bundles still come, valid, but without one."""
    async with start(tmp_path) as net:
        bob = User("beta")
        b = await bob.connect(net)
        upload = upload_of(bob, range(1000, 1000 + ONE_TIME_BURST + 50))
        assert await b.publish_prekeys(upload) == ONE_TIME_BURST + 50
        router, where = net.client_router("mallory"), net.provider_address("beta")
        got = [await lookup_bundle(router, where, bob.address) for _ in range(ONE_TIME_BURST + 20)]
        with_one = [g for g in got if g.one_time is not None]
        assert len(with_one) == ONE_TIME_BURST
        assert all(g.one_time is None for g in got[ONE_TIME_BURST:])
        for g in got:
            g.verify(bob.identity.public, now=int(T0))
        assert net.nodes["beta"].mail["bundles_without_one_time"] == 20
        assert await b.publish_prekeys(upload_of(bob, [])) == 50  # bob still holds the ones refused to the stranger
        await anyio.sleep(3600 / ONE_TIME_PER_HOUR * 2 + 1)  # the budget refills slowly: two more
        later = [await lookup_bundle(router, where, bob.address) for _ in range(3)]
        assert [g.one_time is not None for g in later] == [True, True, False]
        await b.aclose()


def test_one_time_budget_is_per_user_and_remembers_a_bounded_number():
    budget = OneTimeBudget(burst=2, per_hour=3600, max_users=2)
    assert [budget.take(b"a", 0.0) for _ in range(3)] == [True, True, False]
    assert budget.take(b"b", 0.0) and budget.take(b"a", 1.0) and not budget.take(b"a", 1.0)
    budget.take(b"c", 1.0)  # forgets b, the least recently asked
    assert len(budget._buckets) == 2 and b"b" not in budget._buckets

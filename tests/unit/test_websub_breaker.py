"""The per-host circuit breaker's transition table, with an injected clock."""

from __future__ import annotations

from gateway.websub.breaker import Breaker, Breakers


def open_hosts(breakers: Breakers, hosts: list[str]) -> list[str]:
    return [host for host in hosts if breakers[host].state != "closed"]


def test_opens_after_the_threshold_and_half_opens_after_the_cooldown() -> None:
    breaker = Breaker(threshold=3, cooldown=10.0)
    for now in (0.0, 1.0):
        assert breaker.wait(now) == 0
        breaker.failed(now)
    assert breaker.state == "closed"
    breaker.failed(2.0)
    assert breaker.state == "open"
    assert breaker.wait(5.0) == 7.0
    assert breaker.wait(12.0) == 0  # the probe
    assert breaker.state == "half-open"
    assert breaker.wait(12.0) > 0  # only one probe at a time
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.wait(13.0) == 0


def test_a_failed_probe_opens_again() -> None:
    breaker = Breaker(threshold=1, cooldown=5.0)
    breaker.failed(0.0)
    assert breaker.wait(6.0) == 0
    breaker.failed(6.0)
    assert breaker.state == "open" and breaker.wait(7.0) == 4.0


def test_a_success_resets_the_failure_count() -> None:
    breaker = Breaker(threshold=2, cooldown=5.0)
    breaker.failed(0.0)
    breaker.succeeded()
    breaker.failed(1.0)
    assert breaker.state == "closed"


def test_one_breaker_per_host() -> None:
    breakers = Breakers(threshold=1, cooldown=1.0)
    breakers["a:443"].failed(0.0)
    assert breakers["a:443"] is breakers["a:443"]
    assert open_hosts(breakers, ["a:443", "b:443"]) == ["a:443"]
    assert breakers["b:443"].state == "closed"


def test_a_probe_never_sent_lets_the_next_request_probe() -> None:
    """A refused callback (SSRF guard) as the probe: the host was not asked, and without
    ``not_sent`` every later delivery to it waited for a probe that never ends."""
    breaker = Breaker(threshold=1, cooldown=5.0)
    breaker.failed(0.0)
    assert breaker.wait(6.0) == 0  # the probe...
    breaker.not_sent()  # ...was refused before any request
    assert breaker.state == "half-open"
    assert breaker.wait(6.5) == 0  # the next one probes

"""The catalogue (CONTRACT §3, §4): URLs to APIs and topics, scopes, client secrets."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.catalog import MATCHES_KEPT, Catalog
from bridge.config import Api, Config, parse_config
from tests.unit.catalogs import catalog_of


def api(name: str, context: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "context": context,
        "broker": "demo",
        "topics": [
            {"name": "/created", "channel": "orders.created", "scopes": ["orders:read"]},
            {
                "name": "/by-region/{region}",
                "channel": "orders.{region}",
                "scopes": ["orders:region"],
            },
            {
                "name": "/shops/{shop}/items/{item}",
                "channel": "shops.{shop}.{item}",
                "scopes": [],
            },
        ],
    }
    return {**spec, **changes}


def config() -> Config:
    return parse_config(
        {
            "brokers": {"demo": {"type": "memory"}},
            "tiers": {"Gold": {}},
            "apis": [
                api("Orders", "/{version}/orders"),
                api(
                    "Stock",
                    "/stock",
                    topics=[{"name": "/levels", "channel": "stock", "scopes": ["stock:read"]}],
                ),
                api(
                    "Blocked",
                    "/blocked",
                    state="BLOCKED",
                    topics=[{"name": "/b", "channel": "b", "scopes": ["b:read"]}],
                ),
                api(
                    "Retired",
                    "/retired",
                    state="RETIRED",
                    topics=[{"name": "/r", "channel": "r", "scopes": ["r:read"]}],
                ),
                api(
                    "Old",
                    "/old",
                    state="DEPRECATED",
                    topics=[{"name": "/o", "channel": "o", "scopes": ["o:read"]}],
                ),
            ],
            "applications": [
                {
                    "name": "dashboard",
                    "client_id": "dashboard",
                    "client_secret": "dashboard-secret",
                    "subscriptions": [
                        {"api": "Orders", "version": "1.0.0", "tier": "Gold"},
                        {"api": "Stock", "version": "1.0.0", "tier": "Gold", "state": "BLOCKED"},
                        {"api": "Blocked", "version": "1.0.0", "tier": "Gold"},
                        {"api": "Retired", "version": "1.0.0", "tier": "Gold"},
                        {"api": "Old", "version": "1.0.0", "tier": "Gold"},
                    ],
                },
                {
                    "name": "other",
                    "client_id": "other",
                    "client_secret": "other-secret!",
                    "subscriptions": [{"api": "Stock", "version": "1.0.0", "tier": "Gold"}],
                },
            ],
        },
        {},
    )


@pytest.fixture
def catalog() -> Catalog:
    return catalog_of(config())


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "rest"),
    [
        ("/1.0.0/orders", "Orders", ""),
        ("/1.0.0/orders/", "Orders", ""),
        ("/1.0.0/orders/created", "Orders", "/created"),
        ("/1.0.0/orders/by-region/eu", "Orders", "/by-region/eu"),
        ("/1.0.0/orders/hub", "Orders", "/hub"),
        ("/stock/1.0.0/levels", "Stock", "/levels"),
        ("/retired/1.0.0/r", "Retired", "/r"),  # found; the policy hides it (404)
    ],
)
def test_resolve_finds_the_api_and_the_rest(
    catalog: Catalog, path: str, name: str, rest: str
) -> None:
    found = catalog.resolve(path)
    assert found is not None
    entry, remainder = found
    assert (entry.api.name, remainder) == (name, rest)


@pytest.mark.parametrize(
    "path",
    ["/", "", "/1.0.0", "/1.0.0/order", "/1.0.0/ordersx/created", "/2.0.0/orders", "/stock"],
)
def test_resolve_matches_whole_segments_only(catalog: Catalog, path: str) -> None:
    assert catalog.resolve(path) is None


def test_resolve_prefers_the_longest_base_path(catalog: Catalog) -> None:
    # The management API may add an API under another one's base path.
    nested = Api.model_validate(
        api("Special", "/{version}/orders/special", topics=[{"name": "/x", "channel": "special"}])
    )
    catalog.put_api(nested)
    found = catalog.resolve("/1.0.0/orders/special/x")
    assert found is not None
    assert (found[0].api.name, found[1]) == ("Special", "/x")
    found = catalog.resolve("/1.0.0/orders/created")
    assert found is not None
    assert (found[0].api.name, found[1]) == ("Orders", "/created")


def test_put_api_with_a_new_context_moves_its_url(catalog: Catalog) -> None:
    moved = Api.model_validate(api("Orders", "/shop/{version}/orders"))
    catalog.put_api(moved)
    assert catalog.resolve("/1.0.0/orders/created") is None
    found = catalog.resolve("/shop/1.0.0/orders/created")
    assert found is not None
    assert found[0].api is moved
    assert catalog.api("Orders", "1.0.0") is moved


# --- topics ----------------------------------------------------------------------------------


def _entry(catalog: Catalog) -> Any:
    found = catalog.resolve("/1.0.0/orders")
    assert found is not None
    return found[0]


def test_a_plain_topic(catalog: Catalog) -> None:
    match = _entry(catalog).topic("/created")
    assert match is not None
    assert (match.name, match.channel, match.topic.scopes) == (
        "/created",
        "orders.created",
        ["orders:read"],
    )
    assert match.api.name == "Orders"


@pytest.mark.parametrize(
    ("name", "channel"),
    [
        ("/by-region/eu", "orders.eu"),
        ("/by-region/us-east_1", "orders.us-east_1"),
        ("/by-region/A~b", "orders.A~b"),
        ("/shops/42/items/7", "shops.42.7"),
    ],
)
def test_path_parameters_fill_the_channel(catalog: Catalog, name: str, channel: str) -> None:
    match = _entry(catalog).topic(name)
    assert match is not None
    assert (match.name, match.channel) == (name, channel)


@pytest.mark.parametrize(
    "name",
    [
        "/by-region/eu.west",  # would widen orders.{region} to a deeper Kafka/AMQP name
        "/by-region/+",  # MQTT single-level wildcard
        "/by-region/#",  # MQTT/AMQP multi-level wildcard
        "/by-region/*",  # AMQP single-word wildcard
        "/by-region/>",  # NATS-style wildcard
        "/by-region/eu/x",  # an extra segment
        "/by-region/",  # an empty value
        "/by-region",
        "/shops/1/items/a.b",
        "/created/x",
        "/unknown",
    ],
)
def test_unsafe_or_unknown_topic_names_do_not_match(catalog: Catalog, name: str) -> None:
    assert _entry(catalog).topic(name) is None


def test_a_changed_api_matches_its_topics_anew(catalog: Catalog) -> None:
    """Matches are remembered per API entry (a reconnect storm names the same topics):
    one put again with another channel is matched against its new topics."""
    before = _entry(catalog).topic("/by-region/eu")
    assert before is not None and _entry(catalog).topic("/by-region/eu") is before
    changed = api("Orders", "/{version}/orders")
    changed["topics"][1] = {"name": "/by-region/{region}", "channel": "regions.{region}"}
    catalog.put_api(Api.model_validate(changed))
    after = _entry(catalog).topic("/by-region/eu")
    assert after is not None and after.channel == "regions.eu"


def test_remembered_matches_are_bounded(catalog: Catalog) -> None:
    entry = _entry(catalog)
    for n in range(MATCHES_KEPT + 10):  # room names a client chose
        match = entry.topic(f"/by-region/r{n}")
        assert match is not None and match.channel == f"orders.r{n}"
    assert len(entry._matches) <= MATCHES_KEPT
    assert entry.topic("/by-region/r0") is not None  # forgotten, and matched again


# --- scopes and clients ----------------------------------------------------------------------


def test_available_scopes_cover_active_subscriptions_to_visible_apis(catalog: Catalog) -> None:
    # Stock: subscription blocked; Retired: not visible. Blocked (API) and Old (deprecated)
    # still count: their checks come later (§4).
    assert catalog.available_scopes("dashboard") == frozenset(
        {"orders:read", "orders:region", "b:read", "o:read"}
    )
    assert catalog.available_scopes("other") == frozenset({"stock:read"})
    assert catalog.available_scopes("nobody") == frozenset()


def test_subscriptions_are_looked_up_per_client_and_api(catalog: Catalog) -> None:
    orders = catalog.api("Orders", "1.0.0")
    stock = catalog.api("Stock", "1.0.0")
    assert orders is not None
    assert stock is not None
    sub = catalog.subscription("dashboard", orders)
    assert sub is not None
    assert (sub.tier, sub.blocked) == ("Gold", False)
    blocked = catalog.subscription("dashboard", stock)
    assert blocked is not None
    assert blocked.blocked
    assert catalog.subscription("other", orders) is None


def test_unknown_tier_is_unlimited(catalog: Catalog) -> None:
    tier = catalog.tier("Nope")
    assert (tier.events_per_minute, tier.max_connections) == (None, None)


def test_authenticate_client_with_the_right_secret(catalog: Catalog) -> None:
    app = catalog.authenticate_client("dashboard", "dashboard-secret")
    assert app is not None
    assert app.name == "dashboard"


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        ("dashboard", "wrong-secret"),
        ("dashboard", "dashboard-secret "),
        ("dashboard", ""),
        ("dashboard", "other-secret!"),  # another client's secret
        ("nobody", "dashboard-secret"),
        ("nobody", "\0" * 32),  # the placeholder compared for unknown clients
        ("", ""),
    ],
)
def test_authenticate_client_refuses(catalog: Catalog, client_id: str, secret: str) -> None:
    assert catalog.authenticate_client(client_id, secret) is None

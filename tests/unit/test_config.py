"""Configuration (CONTRACT §2): the example validates; every problem names its field path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import (
    Api,
    Config,
    MemoryBroker,
    WindowStep,
    default_data_dir,
    load_config,
    parse_config,
    semantic_problems,
)
from bridge.errors import ConfigError, Problem

ENV = {"STREAMBRIDGE_ADMIN_TOKEN": "admin-token", "DASHBOARD_SECRET": "dashboard-secret"}

# The example of CONTRACT §2, verbatim (the contract lives outside this repository).
CONTRACT_EXAMPLE = """\
gateway:
  public_url: http://127.0.0.1:8080      # used in Link headers and AsyncAPI servers
  state: sqlite:///streambridge.db        # or postgresql://user:pw@host/db
  admin_token: ${STREAMBRIDGE_ADMIN_TOKEN}
  max_message_bytes: 1048576              # largest WebSocket frame accepted
auth:
  issuer: streambridge                    # built-in OAuth2 server (client_credentials)
  audience: streambridge
  token_ttl: 3600
  trusted_issuers:                        # optional external IdPs, validated by JWKS
    - issuer: https://idp.example.com/
      jwks_url: https://idp.example.com/.well-known/jwks.json
      audience: streambridge
websub:
  allow_private_callbacks: false          # true only for local development and tests
  default_lease_seconds: 864000
  retry: {max_attempts: 10, first_delay: 1s, max_delay: 1h}
brokers:                      # what a topic's `channel` names, per type:
  kafka-main: {type: kafka, bootstrap: 127.0.0.1:9092}           # a Kafka topic
  mqtt-main:  {type: mqtt,  url: mqtt://127.0.0.1:1883, qos: 1}  # an MQTT topic filter (+ and # on subscribe)
  rabbit:     {type: amqp,  url: amqp://guest:guest@127.0.0.1:5672/, exchange: amq.topic}
                                                                  # a routing key (binding pattern on subscribe)
  db:         {type: postgres-cdc, dsn: postgresql://postgres@127.0.0.1/app}  # schema.table
  demo:       {type: memory}                                      # any name
tiers:                                    # business plans
  Gold:      {events_per_minute: 6000, max_connections: 20}
  Silver:    {events_per_minute: 600,  max_connections: 2}
  Unlimited: {}
apis:
  - name: Orders
    version: 1.0.0
    context: /{version}/orders            # without {version}: <context>/<version>
    protocol: sse                         # sse | websocket | websub
    broker: kafka-main
    tiers: [Gold, Silver]
    state: PUBLISHED                      # CREATED | PUBLISHED | DEPRECATED | RETIRED | BLOCKED
    replay: {max_events: 10000, max_age: 10m}   # for brokers that cannot replay
    topics:
      - name: /created                    # may hold path parameters: /by-region/{region}
        mode: subscribe                   # subscribe | publish | both (websocket)
        channel: orders.created           # backend topic / routing key; may use {region}
        scopes: [orders:read]
        pipeline:
          - filter: "data.amount > 100"                 # CEL expression over the event
          - map: "{'id': data.id, 'amount': data.amount}"
      - name: /stats
        channel: orders.created
        pipeline:
          - window: {tumbling: 10s, group_by: data.region,
                     aggregate: {total: sum(data.amount), orders: count()}}
applications:                             # optional seed data
  - name: dashboard
    client_id: dashboard
    client_secret: ${DASHBOARD_SECRET}
    subscriptions: [{api: Orders, version: 1.0.0, tier: Gold}]
"""  # noqa: E501 (verbatim from the contract)


def contract_example() -> dict[str, Any]:
    raw = yaml.safe_load(CONTRACT_EXAMPLE)
    assert isinstance(raw, dict)
    return raw


@pytest.fixture
def raw() -> dict[str, Any]:
    return copy.deepcopy(contract_example())


def problems_of(raw: Any, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, ENV if env is None else env)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return caught.value.problems


def paths_of(raw: Any, env: dict[str, str] | None = None) -> list[str]:
    return [p.path for p in problems_of(raw, env)]


# --- the contract's example -------------------------------------------------------------------


def test_contract_example_validates(raw: dict[str, Any]) -> None:
    config = parse_config(raw, ENV)
    assert config.gateway.public_url == "http://127.0.0.1:8080"
    assert config.gateway.admin_token is not None
    assert config.gateway.admin_token.get_secret_value() == "admin-token"
    assert config.auth.trusted_issuers[0].issuer == "https://idp.example.com/"
    assert config.websub.retry.max_delay == 3600.0
    assert {name: b.type for name, b in config.brokers.items()} == {
        "kafka-main": "kafka",
        "mqtt-main": "mqtt",
        "rabbit": "amqp",
        "db": "postgres-cdc",
        "demo": "memory",
    }
    assert config.tiers["Silver"].max_connections == 2
    assert config.tiers["Unlimited"].events_per_minute is None
    (api,) = config.apis
    assert (api.name, api.version, api.base_path) == ("Orders", "1.0.0", "/1.0.0/orders")
    assert api.replay.max_age == 600.0
    created, stats = api.topics
    assert created.scopes == ["orders:read"]
    assert [type(step).__name__ for step in created.pipeline] == ["FilterStep", "MapStep"]
    (window,) = stats.pipeline
    assert isinstance(window, WindowStep)
    assert window.window.tumbling == 10.0
    assert window.window.aggregate == {"total": "sum(data.amount)", "orders": "count()"}
    (app,) = config.applications
    assert app.client_secret.get_secret_value() == "dashboard-secret"
    assert app.subscriptions[0].tier == "Gold"


def test_empty_config_is_valid() -> None:
    assert parse_config(None, {}) == Config()


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of(["apis"]) == [Problem("", "the config must be a mapping at the top level")]


# --- one problem, its exact path --------------------------------------------------------------


def _bad_cel(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["pipeline"][0]["filter"] = "data.amount >"


def _bad_map(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["pipeline"][1]["map"] = "{'id': "


def _bad_group_by(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][1]["pipeline"][0]["window"]["group_by"] = "data.region +"


def _bad_dedupe_key(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["pipeline"][1] = {"dedupe": {"key": "data.(", "within": "5m"}}


def _bad_sample_group_by(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["pipeline"][1] = {
        "sample": {"max": 1, "per": "1s", "group_by": "   "}
    }


def _unknown_broker(r: dict[str, Any]) -> None:
    r["apis"][0]["broker"] = "nowhere"


def _unknown_tier(r: dict[str, Any]) -> None:
    r["apis"][0]["tiers"] = ["Gold", "Bronze"]


def _bad_duration(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][1]["pipeline"][0]["window"]["tumbling"] = "10 parsecs"


def _sliding_without_every(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][1]["pipeline"][0]["window"] = {
        "sliding": "1m",
        "aggregate": {"n": "count()"},
    }


def _bad_aggregate(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][1]["pipeline"][0]["window"]["aggregate"]["total"] = "median(data.x)"


def _step_with_two_keys(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["pipeline"][0] = {"filter": "true", "map": "data"}


def _step_of_unknown_kind(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["pipeline"][1] = {"transform": "data"}


def _step_not_a_mapping(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["pipeline"][0] = "data.amount > 100"


def _unknown_api_key(r: dict[str, Any]) -> None:
    r["apis"][0]["foo"] = 1


def _unknown_broker_type(r: dict[str, Any]) -> None:
    r["brokers"]["demo"] = {"type": "carrier-pigeon"}


def _subscription_to_unknown_api(r: dict[str, Any]) -> None:
    r["applications"][0]["subscriptions"][0]["version"] = "9.9.9"


def _subscription_to_unknown_tier(r: dict[str, Any]) -> None:
    r["applications"][0]["subscriptions"][0]["tier"] = "Platinum"


def _subscription_to_tier_not_offered(r: dict[str, Any]) -> None:
    r["applications"][0]["subscriptions"][0]["tier"] = "Unlimited"


def _duplicate_context(r: dict[str, Any]) -> None:
    r["apis"].append({**copy.deepcopy(r["apis"][0]), "name": "Orders2"})


def _overlapping_context(r: dict[str, Any]) -> None:
    r["apis"].append({**copy.deepcopy(r["apis"][0]), "name": "Sub", "context": "/1.0.0/orders/x"})


def _duplicate_api(r: dict[str, Any]) -> None:
    r["apis"].append({**copy.deepcopy(r["apis"][0]), "context": "/other"})


def _reserved_context(r: dict[str, Any]) -> None:
    r["apis"][0]["context"] = "/api/v1"


def _channel_parameter_undeclared(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["channel"] = "orders.{region}"


def _bad_topic_name(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["name"] = "created"


def _publish_topic_on_sse(r: dict[str, Any]) -> None:
    r["apis"][0]["topics"][0]["mode"] = "publish"
    del r["apis"][0]["topics"][0]["pipeline"]  # (a publish topic with one is another problem)


def _missing_channel(r: dict[str, Any]) -> None:
    del r["apis"][0]["topics"][1]["channel"]


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (_bad_cel, "apis[0].topics[0].pipeline[0].filter", "invalid CEL expression"),
        (_bad_map, "apis[0].topics[0].pipeline[1].map", "invalid CEL expression"),
        (_bad_group_by, "apis[0].topics[1].pipeline[0].window.group_by", "invalid CEL"),
        (_bad_dedupe_key, "apis[0].topics[0].pipeline[1].dedupe.key", "invalid CEL"),
        (_bad_sample_group_by, "apis[0].topics[0].pipeline[1].sample.group_by", "empty"),
        (_unknown_broker, "apis[0].broker", "unknown broker 'nowhere'"),
        (_unknown_tier, "apis[0].tiers[1]", "unknown tier 'Bronze'"),
        (_bad_duration, "apis[0].topics[1].pipeline[0].window.tumbling", "invalid duration"),
        (_sliding_without_every, "apis[0].topics[1].pipeline[0].window", "needs every"),
        (_bad_aggregate, "apis[0].topics[1].pipeline[0].window.aggregate", "total:"),
        (_step_with_two_keys, "apis[0].topics[0].pipeline[0]", "exactly one of"),
        (_step_of_unknown_kind, "apis[0].topics[0].pipeline[1]", "exactly one of"),
        (_step_not_a_mapping, "apis[0].topics[0].pipeline[0]", "exactly one of"),
        (_unknown_api_key, "apis[0].foo", "unknown key"),
        (_unknown_broker_type, "brokers.demo", "carrier-pigeon"),
        (_subscription_to_unknown_api, "applications[0].subscriptions[0].api", "unknown API"),
        (_subscription_to_unknown_tier, "applications[0].subscriptions[0].tier", "Platinum"),
        (_subscription_to_tier_not_offered, "applications[0].subscriptions[0].tier", "offered"),
        (_duplicate_context, "apis[1].context", "duplicate context"),
        (_overlapping_context, "apis[1].context", "duplicate context"),
        (_duplicate_api, "apis[1].version", "duplicate API"),
        (_reserved_context, "apis[0].context", "reserved"),
        (_channel_parameter_undeclared, "apis[0].topics[0]", "{region}"),
        (_bad_topic_name, "apis[0].topics[0].name", "must be a path"),
        (_publish_topic_on_sse, "apis[0].topics[0].mode", "SSE"),
        (_missing_channel, "apis[0].topics[1].channel", "required"),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else None,
)
def test_each_problem_names_its_exact_path(
    raw: dict[str, Any], mutate: Callable[[dict[str, Any]], None], path: str, message: str
) -> None:
    mutate(raw)
    (problem,) = problems_of(raw)
    assert problem.path == path
    assert message in problem.message


def test_replay_max_bytes_has_a_default_and_must_be_positive(raw: dict[str, Any]) -> None:
    assert parse_config(raw, ENV).apis[0].replay.max_bytes == 1_048_576
    raw["apis"][0]["replay"]["max_bytes"] = 0
    raw["apis"][0]["replay"]["max_events"] = -1
    assert sorted(paths_of(raw)) == ["apis[0].replay.max_bytes", "apis[0].replay.max_events"]


def test_unknown_key_reads_path_colon_unknown_key(raw: dict[str, Any]) -> None:
    raw["apis"][0]["foo"] = "bar"
    assert [str(p) for p in problems_of(raw)] == ["apis[0].foo: unknown key"]


def test_sliding_window_with_every_is_valid(raw: dict[str, Any]) -> None:
    raw["apis"][0]["topics"][1]["pipeline"][0]["window"] = {
        "sliding": "1m",
        "every": "10s",
        "aggregate": {"n": "count()"},
    }
    window = parse_config(raw, ENV).apis[0].topics[1].pipeline[0]
    assert isinstance(window, WindowStep)
    assert (window.window.sliding, window.window.every) == (60.0, 10.0)


# --- environment variables --------------------------------------------------------------------


def test_missing_env_var_names_the_variable_and_field(raw: dict[str, Any]) -> None:
    problems = problems_of(raw, {"DASHBOARD_SECRET": "dashboard-secret"})
    assert problems == [
        Problem("gateway.admin_token", "environment variable STREAMBRIDGE_ADMIN_TOKEN is not set")
    ]


def test_every_missing_env_var_is_reported(raw: dict[str, Any]) -> None:
    problems = problems_of(raw, {})
    assert (
        Problem("gateway.admin_token", "environment variable STREAMBRIDGE_ADMIN_TOKEN is not set")
        in problems
    )
    assert (
        Problem("applications[0].client_secret", "environment variable DASHBOARD_SECRET is not set")
        in problems
    )


def test_env_default_is_used_when_unset() -> None:
    raw = {"gateway": {"public_url": "${PUBLIC_URL:-http://gw.example:9000}", "admin_token": "x"}}
    assert parse_config(raw, {}).gateway.public_url == "http://gw.example:9000"


def test_env_value_wins_over_default() -> None:
    raw = {"gateway": {"public_url": "${PUBLIC_URL:-http://gw.example:9000}"}}
    config = parse_config(raw, {"PUBLIC_URL": "https://set.example"})
    assert config.gateway.public_url == "https://set.example"


def test_env_empty_default_and_embedded_references() -> None:
    raw = {"gateway": {"public_url": "http://${HOST:-localhost}:${PORT}${SUFFIX:-}"}}
    config = parse_config(raw, {"PORT": "8443"})
    assert config.gateway.public_url == "http://localhost:8443"


def test_env_values_are_expanded_before_validation() -> None:
    raw = {"gateway": {"max_message_bytes": "${SIZE}"}}
    assert parse_config(raw, {"SIZE": "2048"}).gateway.max_message_bytes == 2048
    (problem,) = problems_of(raw, {"SIZE": "lots"})
    assert problem.path == "gateway.max_message_bytes"


def test_process_environment_is_the_default(
    raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = parse_config(raw)
    assert config.applications[0].client_secret.get_secret_value() == "dashboard-secret"


# --- several problems at once -----------------------------------------------------------------


def test_every_shape_problem_is_reported_at_once(raw: dict[str, Any]) -> None:
    _bad_cel(raw)
    _bad_duration(raw)
    _unknown_api_key(raw)
    assert sorted(paths_of(raw)) == [
        "apis[0].foo",
        "apis[0].topics[0].pipeline[0].filter",
        "apis[0].topics[1].pipeline[0].window.tumbling",
    ]


def test_every_reference_problem_is_reported_at_once(raw: dict[str, Any]) -> None:
    _unknown_broker(raw)
    _unknown_tier(raw)
    _subscription_to_unknown_tier(raw)
    assert sorted(paths_of(raw)) == [
        "apis[0].broker",
        "apis[0].tiers[1]",
        "applications[0].subscriptions[0].tier",
    ]


def test_env_and_reference_problems_are_reported_together(raw: dict[str, Any]) -> None:
    _unknown_broker(raw)
    paths = paths_of(raw, {"DASHBOARD_SECRET": "dashboard-secret"})
    assert sorted(paths) == ["apis[0].broker", "gateway.admin_token"]


def test_shape_and_reference_problems_are_reported_together(raw: dict[str, Any]) -> None:
    # CONTRACT §1: an unknown key and a bad CEL expression do not hide an unknown broker
    # or tier, not even in the same API.
    _unknown_api_key(raw)
    _unknown_broker(raw)
    _unknown_tier(raw)
    _bad_cel(raw)
    raw["gateway"]["colour"] = "blue"
    problems = {p.path: p.message for p in problems_of(raw)}
    assert sorted(problems) == [
        "apis[0].broker",
        "apis[0].foo",
        "apis[0].tiers[1]",
        "apis[0].topics[0].pipeline[0].filter",
        "gateway.colour",
    ]
    assert problems["apis[0].broker"].startswith("unknown broker 'nowhere' (known: db, demo,")
    assert problems["apis[0].tiers[1]"] == "unknown tier 'Bronze'"
    assert problems["apis[0].foo"] == problems["gateway.colour"] == "unknown key"
    assert problems["apis[0].topics[0].pipeline[0].filter"].startswith("invalid CEL expression")


def test_cross_field_problems_survive_broken_items(raw: dict[str, Any]) -> None:
    # An API missing its topics and an application with a short secret still have their
    # references checked; a topic of a broken API still has its mode checked.
    del raw["apis"][0]["topics"][1]["channel"]
    raw["apis"][0]["topics"][0]["mode"] = "publish"
    raw["applications"][0]["client_secret"] = "short"
    _subscription_to_unknown_tier(raw)
    assert sorted(paths_of(raw)) == [
        "apis[0].topics[0].mode",
        "apis[0].topics[0].pipeline",
        "apis[0].topics[1].channel",
        "applications[0].client_secret",
        "applications[0].subscriptions[0].tier",
    ]


@pytest.mark.parametrize(
    ("broker", "tier"),
    [(42, "Gold"), (["kafka-main"], "Gold"), (None, "Gold"), ("kafka-main", 7)],
)
def test_a_field_of_the_wrong_shape_has_one_problem(
    raw: dict[str, Any], broker: Any, tier: Any
) -> None:
    raw["apis"][0]["broker"] = broker
    raw["apis"][0]["tiers"] = [tier]
    (problem,) = problems_of(raw)
    assert problem.path in ("apis[0].broker", "apis[0].tiers[0]")
    assert "unknown" not in problem.message


def test_a_malformed_section_is_one_problem_not_a_crash(raw: dict[str, Any]) -> None:
    raw["brokers"] = ["kafka-main"]
    raw["apis"][0]["topics"] = "none"
    raw["applications"][0]["subscriptions"] = [5]
    paths = paths_of(raw)
    assert "brokers" in paths
    assert "apis[0].topics" in paths
    assert "applications[0].subscriptions[0]" in paths
    assert "apis[0].broker" in paths  # no broker is defined now


def test_a_config_built_in_code_gets_the_same_checks() -> None:
    api = _api("/orders").model_copy(update={"broker": "elsewhere", "tiers": ["Gold"]})
    config = Config(brokers={"demo": MemoryBroker(type="memory")}, apis=[api])
    assert [str(p) for p in semantic_problems(config)] == [
        "apis[0].broker: unknown broker 'elsewhere' (known: demo)",
        "apis[0].tiers[0]: unknown tier 'Gold'",
    ]


# --- files -----------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "streambridge.yaml"
    path.write_text(yaml.safe_dump(contract_example()), encoding="utf-8")
    assert load_config(path, ENV).apis[0].name == "Orders"


def test_load_config_on_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apis: [\n  - name: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    (problem,) = caught.value.problems
    assert problem.path == ""
    assert "not valid YAML" in problem.message
    assert str(path) in problem.message
    assert "\n" not in problem.message, "one line per problem (CONTRACT §1)"
    assert "at line 2, column 3" in problem.message


def test_load_config_on_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", ENV)


def test_load_config_reports_problems_with_paths(tmp_path: Path) -> None:
    raw = contract_example()
    _unknown_broker(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert [p.path for p in caught.value.problems] == ["apis[0].broker"]


# --- base paths (CONTRACT §3) ------------------------------------------------------------------


def _api(context: str, version: str = "1.0.0") -> Api:
    return Api.model_validate(
        {
            "name": "Orders",
            "version": version,
            "context": context,
            "broker": "demo",
            "topics": [{"name": "/created", "channel": "orders.created"}],
        }
    )


@pytest.mark.parametrize(
    ("context", "version", "base_path"),
    [
        ("/{version}/orders", "1.0.0", "/1.0.0/orders"),
        ("/orders/{version}", "2", "/orders/2"),
        ("/shop/{version}/orders", "v3", "/shop/v3/orders"),
        ("/orders", "1.0.0", "/orders/1.0.0"),
        ("/shop/orders", "beta", "/shop/orders/beta"),
    ],
)
def test_base_path(context: str, version: str, base_path: str) -> None:
    assert _api(context, version).base_path == base_path


@pytest.mark.parametrize("context", ["orders", "/orders/", "/{ver}/orders", "/or ders", "/"])
def test_invalid_contexts_are_refused(raw: dict[str, Any], context: str) -> None:
    raw["apis"][0]["context"] = context
    assert paths_of(raw) == ["apis[0].context"]


def test_same_context_with_different_versions_is_no_clash(raw: dict[str, Any]) -> None:
    second = {**copy.deepcopy(raw["apis"][0]), "version": "2.0.0"}
    raw["apis"].append(second)
    config = parse_config(raw, ENV)
    assert [a.base_path for a in config.apis] == ["/1.0.0/orders", "/2.0.0/orders"]


def test_broker_field_problem_names_the_broker_not_the_union_tag() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"brokers": {"m": {"type": "mqtt", "url": "http://x"}}}, env={})
    assert [str(p) for p in caught.value.problems] == [
        "brokers.m.url: must be an mqtt:// or mqtts:// URL"
    ]


# --- where the gateway keeps its files -------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "data_dir"),
    [
        ("sqlite:///streambridge.db", "streambridge-data"),  # the default state, relative
        ("sqlite:///var/state.db", "var/streambridge-data"),
        ("sqlite:////srv/sb/state.db", "/srv/sb/streambridge-data"),
        ("sqlite:////srv/sb/state.db?timeout=5", "/srv/sb/streambridge-data"),
        ("postgresql://sb:pw@db/sb", "/xdg/state/streambridge"),
        ("postgresql+asyncpg://sb@db/sb", "/xdg/state/streambridge"),
        ("sqlite:///:memory:", "/xdg/state/streambridge"),
        ("sqlite://", "/xdg/state/streambridge"),
    ],
)
def test_the_data_dir_defaults_to_beside_the_state_store(state: str, data_dir: str) -> None:
    assert default_data_dir(state, {"XDG_STATE_HOME": "/xdg/state"}) == Path(data_dir)


@pytest.mark.parametrize("xdg", [None, "", "relative/state"])
def test_without_a_usable_xdg_state_home_the_data_dir_is_under_the_home(xdg: str | None) -> None:
    # XDG Base Directory: unset, empty or relative means $HOME/.local/state.
    env = {} if xdg is None else {"XDG_STATE_HOME": xdg}
    expected = Path.home() / ".local" / "state" / "streambridge"
    assert default_data_dir("postgresql://sb@db/sb", env) == expected


def test_the_data_path_is_data_dir_when_set_else_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    postgres = {"gateway": {"state": "postgresql://sb@db/sb"}}
    assert parse_config(postgres, {}).gateway.data_path == tmp_path / "streambridge"
    assert Config().gateway.data_path == Path("streambridge-data")  # beside streambridge.db
    chosen = {"gateway": {"state": "postgresql://sb@db/sb", "data_dir": "/var/lib/sb"}}
    assert parse_config(chosen, {}).gateway.data_path == Path("/var/lib/sb")


# --- CORS (§4b) ---------------------------------------------------------------------------


def test_cors_origins_of_the_gateway_and_of_an_api(raw: dict[str, Any]) -> None:
    raw["gateway"]["cors"] = {"allow_origins": ["http://127.0.0.1:5173/", "https://app.example"]}
    raw["apis"][0]["cors"] = {"allow_origins": ["*"]}
    config = parse_config(raw, ENV)
    assert config.gateway.cors.allow_origins == ["http://127.0.0.1:5173", "https://app.example"]
    assert config.apis[0].cors is not None
    assert config.apis[0].cors.allow_origins == ["*"]
    assert parse_config(None, {}).gateway.cors.allow_origins == []


def test_every_bad_cors_origin_is_named(raw: dict[str, Any]) -> None:
    raw["gateway"]["cors"] = {"allow_origins": ["app.example", "http://a.example/path"]}
    raw["apis"][0]["cors"] = {"allow_origins": ["ftp://x"]}
    problems = problems_of(raw)
    paths = [p.path for p in problems]
    assert paths == ["gateway.cors.allow_origins", "apis[0].cors.allow_origins"]
    assert "app.example, http://a.example/path" in problems[0].message


def test_coalesce_is_off_by_default_and_takes_a_short_duration() -> None:
    assert Config().gateway.coalesce is None
    assert parse_config({"gateway": {"coalesce": "5ms"}}, {}).gateway.coalesce == 0.005
    bad = {"gateway": {"coalesce": "1s", "heartbeat": "1m"}}
    assert sorted(paths_of(bad, {})) == ["gateway.coalesce", "gateway.heartbeat"]  # both

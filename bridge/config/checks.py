"""Checks that span fields (CONTRACT §2): references, duplicates, protocol and mode.

They read the config tree as written (after ``${ENV}`` expansion), not the validated
models, so they run whatever else is wrong: an unknown broker or tier is reported beside
a bad CEL expression or an unknown key, never hidden by it (CONTRACT §1: ``check``
reports every problem in one run). A value of the wrong shape is skipped here; validation
reports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from bridge.config.apis import CONTEXT, VERSION, Api, Topic, base_path
from bridge.config.document import Config
from bridge.config.endpoints import endpoint_url_problem
from bridge.errors import Problem

RESERVED_PREFIXES = (
    "/api/v1",
    "/oauth2",
    "/.well-known",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/redoc",
    "/portal",
)

Tree = Mapping[str, Any]


def semantic_problems(config: Config) -> list[Problem]:
    """The cross-field problems of a config built in code (a management API candidate)."""
    return cross_field_problems(config.model_dump())


def cross_field_problems(tree: Tree) -> list[Problem]:
    """Every cross-field problem of a config tree, each naming its field path."""
    brokers, tiers = _keys(tree.get("brokers")), _keys(tree.get("tiers"))
    apis = list(_mappings(tree.get("apis")))
    problems: list[Problem] = []
    for i, api in apis:
        problems += _reference_problems(f"apis[{i}]", api, brokers, tiers)
        problems += _source_problems(f"apis[{i}]", api)
        problems += _topic_problems(f"apis[{i}]", _text(api, "protocol", Api), api.get("topics"))
    problems += _duplicate_problems(apis)
    problems += _application_problems(tree.get("applications"), apis, tiers)
    problems += _cluster_problems(tree.get("cluster"), tree.get("brokers"))
    return problems


def _cluster_problems(cluster: object, brokers: object) -> list[Problem]:
    """CONTRACT §11: ``cluster.log`` names a kafka broker; the memory broker lives in one
    process, so a cluster serves it only from a copy in the cluster log."""
    if not isinstance(cluster, Mapping):
        return []
    types = {
        name: broker.get("type")
        for name, broker in (brokers.items() if isinstance(brokers, Mapping) else ())
        if isinstance(broker, Mapping)
    }
    log = _text(cluster, "log")
    if log is not None:
        if log not in types:
            known = ", ".join(sorted(n for n, t in types.items() if t == "kafka")) or "none"
            return [Problem("cluster.log", f"unknown broker {log!r} (kafka brokers: {known})")]
        if types[log] != "kafka":
            return [Problem("cluster.log", f"broker {log!r} is {types[log]}; the log is kafka")]
        return []
    memory = sorted(name for name, kind in types.items() if kind == "memory")
    if memory:
        return [
            Problem(
                "cluster.log",
                f"the memory broker in a cluster requires cluster.log (brokers.{memory[0]})",
            )
        ]
    return []


def _reference_problems(
    at: str, api: Tree, brokers: frozenset[str], tiers: frozenset[str]
) -> list[Problem]:
    problems: list[Problem] = []
    broker = _text(api, "broker")
    if broker is not None and broker not in brokers:
        known = ", ".join(sorted(brokers)) or "none defined"
        problems.append(Problem(f"{at}.broker", f"unknown broker {broker!r} (known: {known})"))
    for j, tier in _texts(api.get("tiers")):
        if tier not in tiers:
            problems.append(Problem(f"{at}.tiers[{j}]", f"unknown tier {tier!r}"))
    base = _base_path(api)
    if base is not None and base.startswith(RESERVED_PREFIXES):
        problems.append(Problem(f"{at}.context", f"{base} is reserved for the gateway itself"))
    return problems


def _source_problems(at: str, api: Tree) -> list[Problem]:
    """CONTRACT §13: a broker or an endpoint, not both; endpoint URLs of the protocol."""
    has_broker, endpoint = api.get("broker") is not None, api.get("endpoint")
    protocol = _text(api, "protocol", Api)
    if has_broker and endpoint is not None:
        return [Problem(f"{at}.endpoint", "an API has a broker or an endpoint, not both")]
    if not has_broker and endpoint is None:
        return [Problem(f"{at}.broker", "an API needs a broker or an endpoint")]
    problems: list[Problem] = []
    topics = list(_mappings(api.get("topics")))
    if endpoint is None:
        for k, topic in topics:
            if topic.get("url_mapping") is not None:
                problems.append(
                    Problem(f"{at}.topics[{k}].url_mapping", "only an endpoint API maps URLs")
                )
            if not topic.get("channel"):
                problems.append(Problem(f"{at}.topics[{k}].channel", "Field required"))
        return problems
    if protocol == "websub":
        problems.append(Problem(f"{at}.endpoint", "a websub API reads a broker"))
    if isinstance(endpoint, Mapping):
        for target in ("production", "sandbox"):
            url = _text(endpoint, target)
            problem = None if url is None else endpoint_url_problem(url, protocol)
            if problem is not None:
                problems.append(Problem(f"{at}.endpoint.{target}", problem))
    if protocol == "websocket":
        for k, topic in topics:
            if topic.get("pipeline"):
                problems.append(
                    Problem(f"{at}.topics[{k}].pipeline", "a WebSocket proxy passes frames as sent")
                )
    return problems


def _duplicate_problems(apis: list[tuple[int, Tree]]) -> list[Problem]:
    """Two APIs of one name and version, or whose URLs overlap (CONTRACT §3)."""
    problems: list[Problem] = []
    seen_ids: dict[tuple[str, str], int] = {}
    seen_paths: dict[str, int] = {}
    for i, api in apis:
        name, version = _text(api, "name"), _text(api, "version")
        if name is not None and version is not None:
            if (name, version) in seen_ids:
                also = seen_ids[(name, version)]
                problems.append(
                    Problem(
                        f"apis[{i}].version",
                        f"duplicate API {name} {version} (also apis[{also}])",
                    )
                )
            seen_ids.setdefault((name, version), i)
        base = _base_path(api)
        if base is None:
            continue
        for path, j in seen_paths.items():
            if base == path or base.startswith(path + "/") or path.startswith(base + "/"):
                problems.append(
                    Problem(
                        f"apis[{i}].context",
                        f"duplicate context: {base} overlaps apis[{j}] ({path})",
                    )
                )
                break
        seen_paths.setdefault(base, i)
    return problems


def _topic_problems(at: str, protocol: str | None, topics: object) -> list[Problem]:
    problems: list[Problem] = []
    names: set[str] = set()
    for k, topic in _mappings(topics):
        tat = f"{at}.topics[{k}]"
        name, mode = _text(topic, "name"), _text(topic, "mode", Topic)
        if name is not None:
            if name in names:
                problems.append(Problem(f"{tat}.name", f"duplicate topic {name}"))
            names.add(name)
        if mode == "both" and protocol not in ("websocket", None):
            problems.append(Problem(f"{tat}.mode", "mode both needs protocol websocket"))
        if mode not in ("subscribe", None) and protocol == "sse":
            problems.append(
                Problem(
                    f"{tat}.mode",
                    f"mode {mode} needs protocol websocket or websub; SSE only sends",
                )
            )
        if topic.get("pipeline") and mode == "publish":
            problems.append(Problem(f"{tat}.pipeline", "a publish topic has no pipeline"))
        webhooks = protocol == "websub" and mode == "publish"
        if (
            topic.get("webhook_secret") is not None
            and None not in (protocol, mode)
            and not webhooks
        ):
            problems.append(
                Problem(
                    f"{tat}.webhook_secret",
                    "only a publish topic of a websub API takes inbound webhooks",
                )
            )
        if protocol == "websub" and name == "/hub":
            problems.append(Problem(f"{tat}.name", "/hub is the hub of a websub API"))
    return problems


def _application_problems(
    applications: object, apis: list[tuple[int, Tree]], tiers: frozenset[str]
) -> list[Problem]:
    problems: list[Problem] = []
    by_id: dict[tuple[str | None, str | None], Tree] = {}
    for _, item in apis:
        by_id.setdefault((_text(item, "name"), _text(item, "version")), item)
    client_ids: dict[str, int] = {}
    for i, app in _mappings(applications):
        at = f"applications[{i}]"
        client_id = _text(app, "client_id")
        if client_id is not None:
            if client_id in client_ids:
                problems.append(
                    Problem(
                        f"{at}.client_id",
                        f"duplicate client_id (also applications[{client_ids[client_id]}])",
                    )
                )
            client_ids.setdefault(client_id, i)
        for j, sub in _mappings(app.get("subscriptions")):
            sat = f"{at}.subscriptions[{j}]"
            api_name, version, tier = _text(sub, "api"), _text(sub, "version"), _text(sub, "tier")
            api = by_id.get((api_name, version))
            if api is None and api_name is not None and version is not None:
                problems.append(Problem(f"{sat}.api", f"unknown API {api_name} {version}"))
            offered = [t for _, t in _texts(api.get("tiers"))] if api is not None else []
            if tier is None:
                continue
            if tier not in tiers:
                problems.append(Problem(f"{sat}.tier", f"unknown tier {tier!r}"))
            elif offered and tier not in offered:
                problems.append(
                    Problem(
                        f"{sat}.tier",
                        f"tier {tier} is not offered by {api_name} {version} "
                        f"({', '.join(offered)})",
                    )
                )
    return problems


# --- reading a tree that may be malformed anywhere ---------------------------------------------


def _keys(node: object) -> frozenset[str]:
    """The names a mapping defines (``brokers``, ``tiers``)."""
    if not isinstance(node, Mapping):
        return frozenset()
    return frozenset(k for k in node if isinstance(k, str))


def _mappings(node: object) -> Iterator[tuple[int, Tree]]:
    """The mappings of a list with their indices; other items are shape problems."""
    if isinstance(node, list):
        yield from ((i, item) for i, item in enumerate(node) if isinstance(item, Mapping))


def _texts(node: object) -> Iterator[tuple[int, str]]:
    """The strings of a list with their indices."""
    if isinstance(node, list):
        yield from ((i, item) for i, item in enumerate(node) if isinstance(item, str))


def _text(node: Tree, key: str, model: type[BaseModel] | None = None) -> str | None:
    """``node[key]`` when it is a string; when absent, ``model``'s default for the field."""
    if key in node:
        value = node[key]
    elif model is not None:
        value = model.model_fields[key].default
    else:
        return None
    return value if isinstance(value, str) else None


def _base_path(api: Tree) -> str | None:
    """The API's base path (CONTRACT §3) when its context and version are well formed."""
    context, version = _text(api, "context"), _text(api, "version")
    if context is None or version is None:
        return None
    if not CONTEXT.fullmatch(context) or not VERSION.fullmatch(version):
        return None
    return base_path(context, version)

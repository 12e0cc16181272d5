"""The running gateway's catalogue: APIs by URL, applications, subscriptions, tiers.

Seeded from the config; later changed live by the management API. Pure data with
lookups, no I/O.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.config import Api, Application, Config, Tier, Topic
from bridge.paths import PathTemplate, fill
from bridge.policy import SubscriptionState

VISIBLE_STATES = frozenset({"PUBLISHED", "DEPRECATED", "BLOCKED"})


@dataclass(frozen=True, slots=True)
class TopicMatch:
    """A topic of an API as one request names it, with its parameters filled."""

    api: Api
    topic: Topic
    name: str  # as requested, e.g. /by-region/eu
    channel: str  # backend channel, e.g. orders.eu


@dataclass(slots=True)
class ApiEntry:
    api: Api
    templates: list[tuple[PathTemplate, Topic]] = field(default_factory=list)

    @classmethod
    def of(cls, api: Api) -> ApiEntry:
        return cls(api, [(PathTemplate.compile(t.name), t) for t in api.topics])

    def topic(self, name: str) -> TopicMatch | None:
        for template, topic in self.templates:
            values = template.match(name)
            if values is not None:
                return TopicMatch(self.api, topic, name, fill(topic.channel, values))
        return None


class Catalog:
    def __init__(self, config: Config) -> None:
        self.tiers: dict[str, Tier] = dict(config.tiers)
        self._apis: dict[tuple[str, str], ApiEntry] = {}
        self._by_base: dict[str, ApiEntry] = {}
        self.applications: dict[str, Application] = {}
        self.subscriptions: dict[tuple[str, str, str], SubscriptionState] = {}
        for api in config.apis:
            self.put_api(api)
        for app in config.applications:
            self.applications[app.client_id] = app
            for sub in app.subscriptions:
                state = SubscriptionState(
                    app.client_id, sub.api, sub.version, sub.tier, blocked=sub.state == "BLOCKED"
                )
                self.subscriptions[state.key] = state

    # --- APIs --------------------------------------------------------------------------
    def put_api(self, api: Api) -> None:
        previous = self._apis.get((api.name, api.version))
        if previous is not None:
            self._by_base.pop(previous.api.base_path, None)
        entry = ApiEntry.of(api)
        self._apis[(api.name, api.version)] = entry
        self._by_base[api.base_path] = entry

    def apis(self) -> Iterable[Api]:
        return (entry.api for entry in self._apis.values())

    def api(self, name: str, version: str) -> Api | None:
        entry = self._apis.get((name, version))
        return entry.api if entry else None

    def resolve(self, path: str) -> tuple[ApiEntry, str] | None:
        """The API whose base URL is ``path`` or a prefix of it, and the rest of the path."""
        path = path.rstrip("/") or "/"
        candidate = path
        while candidate:
            entry = self._by_base.get(candidate)
            if entry is not None:
                return entry, path[len(candidate) :]
            candidate = candidate.rpartition("/")[0]
        return None

    # --- applications and subscriptions ----------------------------------------------------
    def authenticate_client(self, client_id: str, secret: str) -> Application | None:
        """Constant-time secret comparison; unknown clients cost the same as known ones."""
        app = self.applications.get(client_id)
        expected = app.client_secret.get_secret_value() if app else "\0" * 32
        matches = hmac.compare_digest(expected.encode(), secret.encode())
        return app if app is not None and matches else None

    def subscription(self, client_id: str, api: Api) -> SubscriptionState | None:
        return self.subscriptions.get((client_id, api.name, api.version))

    def tier(self, name: str) -> Tier:
        return self.tiers.get(name) or Tier()

    def available_scopes(self, client_id: str) -> frozenset[str]:
        """Every scope of the topics of the APIs the application is subscribed to (§4)."""
        scopes: set[str] = set()
        for (owner, name, version), state in self.subscriptions.items():
            api = self.api(name, version)
            if owner == client_id and not state.blocked and api and api.state in VISIBLE_STATES:
                for topic in api.topics:
                    scopes.update(topic.scopes)
        return frozenset(scopes)

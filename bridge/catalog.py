"""The running gateway's catalogue: APIs by URL, applications, subscriptions, tiers.

Built from a store snapshot (seeded from the config, later changed live by the
management API). Pure data with lookups, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bridge.config import Api, Tier, Topic
from bridge.lifecycle import VISIBLE_STATES
from bridge.paths import PathTemplate, fill
from bridge.policy import SubscriptionState
from bridge.secrets import dummy_hash, verify_secret
from bridge.store.records import ApplicationRecord, Snapshot


@dataclass(frozen=True, slots=True)
class TopicMatch:
    """A topic of an API as one request names it, with its parameters filled."""

    api: Api
    topic: Topic
    name: str  # as requested, e.g. /by-region/eu
    channel: str  # backend channel, e.g. orders.eu


MATCHES_KEPT = 4096  # topic names an API entry remembers the match of (then it forgets)


@dataclass(slots=True)
class ApiEntry:
    api: Api
    templates: list[tuple[PathTemplate, Topic]] = field(default_factory=list)
    # Matches by name: a reconnect storm names the same few topics thousands of times. An
    # entry lives as long as its catalogue, so a changed API starts with none.
    _matches: dict[str, TopicMatch | None] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, api: Api) -> ApiEntry:
        return cls(api, [(PathTemplate.compile(t.name), t) for t in api.topics])

    def topic(self, name: str) -> TopicMatch | None:
        matches = self._matches
        try:
            return matches[name]
        except KeyError:
            pass
        found = None
        for template, topic in self.templates:
            values = template.match(name)
            if values is not None:
                found = TopicMatch(self.api, topic, name, fill(topic.channel, values))
                break
        if len(matches) >= MATCHES_KEPT:  # names a client chose: never more than this many
            matches.clear()
        matches[name] = found
        return found


class Catalog:
    """An immutable view of one store snapshot; the runtime swaps in a new one on change."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.revision = snapshot.revision
        self.tiers: dict[str, Tier] = dict(snapshot.tiers)
        self._apis: dict[tuple[str, str], ApiEntry] = {}
        self._by_base: dict[str, ApiEntry] = {}
        self.applications = {app.client_id: app for app in snapshot.applications}
        self.subscriptions: dict[tuple[str, str, str], SubscriptionState] = {}
        self.subscription_records = {sub.id: sub for sub in snapshot.subscriptions}
        for api in snapshot.apis:
            self.put_api(api)
        for sub in snapshot.subscriptions:
            state = SubscriptionState(
                sub.client_id, sub.api, sub.version, sub.tier, blocked=sub.state == "BLOCKED"
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
    def authenticate_client(self, client_id: str, secret: str) -> ApplicationRecord | None:
        """Slow-hash check (run it in a thread); unknown clients cost the same as known ones."""
        app = self.applications.get(client_id)
        matches = verify_secret(secret, app.secret_hash if app else dummy_hash())
        return app if app is not None and matches else None

    def subscription(self, client_id: str, api: Api) -> SubscriptionState | None:
        return self.subscriptions.get((client_id, api.name, api.version))

    def tier(self, name: str) -> Tier:
        return self.tiers.get(name) or Tier()

    def unmasking_scopes(self, client_id: str) -> frozenset[str]:
        """The ``mask.unless_scope`` of the topics of the APIs the application is
        subscribed to: granted only when asked for (masked is the default, §7b)."""
        scopes: set[str] = set()
        for (owner, name, version), state in self.subscriptions.items():
            api = self.api(name, version)
            if owner == client_id and not state.blocked and api and api.state in VISIBLE_STATES:
                for topic in api.topics:
                    if topic.mask is not None and topic.mask.unless_scope is not None:
                        scopes.add(topic.mask.unless_scope)
        return frozenset(scopes)

    def available_scopes(self, client_id: str) -> frozenset[str]:
        """Every scope of the topics of the APIs the application is subscribed to (§4)."""
        scopes: set[str] = set()
        for (owner, name, version), state in self.subscriptions.items():
            api = self.api(name, version)
            if owner == client_id and not state.blocked and api and api.state in VISIBLE_STATES:
                for topic in api.topics:
                    scopes.update(topic.scopes)
        return frozenset(scopes)

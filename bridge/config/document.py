"""The whole config document (CONTRACT §2), validated from the first release."""

from __future__ import annotations

from bridge.config.apis import Api
from bridge.config.applications import Application, Tier
from bridge.config.brokers import Broker
from bridge.config.cluster import ClusterSettings
from bridge.config.fields import Strict
from bridge.config.settings import (
    AuthSettings,
    GatewaySettings,
    PortalSettings,
    WebSubSettings,
)


class Config(Strict):
    gateway: GatewaySettings = GatewaySettings()
    auth: AuthSettings = AuthSettings()
    websub: WebSubSettings = WebSubSettings()
    portal: PortalSettings = PortalSettings()
    cluster: ClusterSettings | None = None  # CONTRACT §11; None: one process, as before
    brokers: dict[str, Broker] = {}
    tiers: dict[str, Tier] = {}
    apis: list[Api] = []
    applications: list[Application] = []

"""Broker connectors behind one Protocol; only these modules import broker clients."""

from connectors.base import Connector, Gap
from connectors.registry import LOGGED_TYPES, cluster_logged, connector_for

__all__ = ["LOGGED_TYPES", "Connector", "Gap", "cluster_logged", "connector_for"]

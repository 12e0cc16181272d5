"""Broker connectors behind one Protocol; only these modules import broker clients."""

from connectors.base import Connector, Gap
from connectors.registry import connector_for

__all__ = ["Connector", "Gap", "connector_for"]

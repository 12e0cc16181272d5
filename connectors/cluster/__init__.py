"""The cluster log (CONTRACT §11): offset-less channels copied once into Kafka."""

from connectors.cluster.log import ClusterLog

__all__ = ["ClusterLog"]

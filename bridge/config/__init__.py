"""Configuration models and loading (CONTRACT §2), validated whole from the first release.

    fields        Strict (the base model), Duration, CelExpression
    settings      gateway, auth and websub sections
    cluster       the cluster section: shared limits and the cluster log (§11)
    brokers       one model per broker type, discriminated on ``type``
    applications  tiers and seeded applications
    steps         pipeline steps, discriminated by their one key
    endpoints     an API's upstream SSE/WebSocket server, instead of a broker (§13)
    apis          APIs and their topics
    document      Config, the whole document
    delivery      a tier's delivery policy: all, conflate or sample
    checks        what spans fields: references, duplicates, protocol and mode
    loading       YAML, ``${ENV}`` expansion, validation with every problem at once

Every problem names its field path: ``apis[2].topics[0].pipeline[1].filter``.
"""

from bridge.config.apis import (
    REVEAL_SECRETS,
    Api,
    ApiState,
    Mask,
    Replay,
    Topic,
    base_path,
    stored_document,
)
from bridge.config.applications import Application, SubscriptionSeed, Tier
from bridge.config.brokers import (
    BROKER_TYPES,
    AmqpBroker,
    Broker,
    KafkaBroker,
    MemoryBroker,
    MqttBroker,
    PostgresCdcBroker,
)
from bridge.config.checks import RESERVED_PREFIXES, cross_field_problems, semantic_problems
from bridge.config.cluster import ClusterSettings, OnRedisDown
from bridge.config.delivery import (
    ConflateDelivery,
    Conflation,
    Delivery,
    SampleDelivery,
    Sampling,
    describe,
)
from bridge.config.document import Config
from bridge.config.endpoints import Endpoint, Suspension, Target, endpoint_url_problem
from bridge.config.fields import CelExpression, Duration, Strict, expression_context
from bridge.config.loading import expand_env, format_path, load_config, parse_config
from bridge.config.settings import (
    AuthSettings,
    GatewaySettings,
    Limits,
    RetrySettings,
    TrustedIssuer,
    WebSubSettings,
    default_data_dir,
)
from bridge.config.steps import (
    STEP_KINDS,
    DedupeSpec,
    DedupeStep,
    FilterStep,
    MapStep,
    SampleSpec,
    SampleStep,
    Step,
    WindowSpec,
    WindowStep,
)

__all__ = [
    "BROKER_TYPES",
    "RESERVED_PREFIXES",
    "REVEAL_SECRETS",
    "STEP_KINDS",
    "AmqpBroker",
    "Api",
    "ApiState",
    "Application",
    "AuthSettings",
    "Broker",
    "CelExpression",
    "ClusterSettings",
    "Config",
    "ConflateDelivery",
    "Conflation",
    "DedupeSpec",
    "DedupeStep",
    "Delivery",
    "Duration",
    "Endpoint",
    "FilterStep",
    "GatewaySettings",
    "KafkaBroker",
    "Limits",
    "MapStep",
    "Mask",
    "MemoryBroker",
    "MqttBroker",
    "OnRedisDown",
    "PostgresCdcBroker",
    "Replay",
    "RetrySettings",
    "SampleDelivery",
    "SampleSpec",
    "SampleStep",
    "Sampling",
    "Step",
    "Strict",
    "SubscriptionSeed",
    "Suspension",
    "Target",
    "Tier",
    "Topic",
    "TrustedIssuer",
    "WebSubSettings",
    "WindowSpec",
    "WindowStep",
    "base_path",
    "cross_field_problems",
    "default_data_dir",
    "describe",
    "endpoint_url_problem",
    "expand_env",
    "expression_context",
    "format_path",
    "load_config",
    "parse_config",
    "semantic_problems",
    "stored_document",
]

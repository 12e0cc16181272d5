"""Streambridge core: the event value, configuration, access policy, cursors and wire encodings.

Nothing here imports from ``gateway`` or ``connectors``.
"""

"""The ``streambridge`` command (CONTRACT §1): serve, check.

This is a composition root: the config is loaded here, never at import time, and the
gateway is imported only by ``serve``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bridge.config import Config, load_config, parse_config
from bridge.errors import ConfigError

EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streambridge", description="Broker streams as managed web APIs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (the embedded demo without config)")
    serve.add_argument(
        "--config",
        default=os.environ.get("STREAMBRIDGE_CONFIG"),
        help="YAML config file (default: $STREAMBRIDGE_CONFIG; none: embedded demo)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    check = commands.add_parser("check", help="validate a config file")
    check.add_argument("--config", required=True)
    return parser


def _report(error: ConfigError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_INVALID


def check(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return _report(exc)
    topics = sum(len(api.topics) for api in config.apis)
    print(
        f"{path}: valid ({len(config.apis)} APIs, {topics} topics, "
        f"{len(config.brokers)} brokers, {len(config.applications)} applications)"
    )
    return 0


def serve(path: str | None, host: str, port: int) -> int:
    import secrets

    from bridge.demo import demo_config, demo_instructions
    from gateway.demo import produce
    from gateway.logs import configure
    from gateway.server import build_server

    configure()
    demo_secret: str | None = None
    try:
        if path:
            config: Config = load_config(path)
        else:
            demo_secret = secrets.token_urlsafe(18)
            raw = demo_config(demo_secret)
            raw["gateway"]["public_url"] = f"http://{host}:{port}"
            config = parse_config(raw)
        server = build_server(config, host, port, background=[produce] if demo_secret else [])
    except ConfigError as exc:
        return _report(exc)
    if demo_secret is not None:
        print(demo_instructions(f"http://{host}:{port}", demo_secret), flush=True)
    server.run()
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return check(args.config)
    return serve(args.config, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())

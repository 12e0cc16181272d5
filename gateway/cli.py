"""The ``streambridge`` command (CONTRACT §1): serve (``--workers N``), check, asyncapi.

This is a composition root: the config is loaded here, never at import time, and the
server and its dependencies are imported only by ``serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

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
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="gateway processes on the port, one cluster node each (N > 1 needs cluster.redis)",
    )
    # Set by ``--workers``' supervisor for each process it starts (gateway.workers).
    serve.add_argument("--worker", help=argparse.SUPPRESS)  # <index>:<supervisor pid>
    worker = commands.add_parser("worker", help="run the window steps of a cluster (Faust)")
    worker.add_argument("--config", default=os.environ.get("STREAMBRIDGE_CONFIG"), required=False)
    worker.add_argument("--app-id", default="streambridge-windows", help="Faust app and group id")
    worker.add_argument(
        "--expires",
        type=float,
        default=30.0,
        help="a window closes once events this many seconds past its end are counted "
        "(or after this long without events); above --session-timeout",
    )
    worker.add_argument("--session-timeout", type=float, default=10.0)
    worker.add_argument(
        "--partitions", type=int, default=2, help="of a source topic the worker creates"
    )
    check = commands.add_parser("check", help="validate a config file")
    check.add_argument("--config", required=True)
    check.add_argument("--workers", type=_positive, default=1, help="as serve will be started")
    asyncapi = commands.add_parser("asyncapi", help="AsyncAPI export and import")
    asyncapi_commands = asyncapi.add_subparsers(dest="asyncapi_command", required=True)
    export = asyncapi_commands.add_parser("export", help="an API of a config as AsyncAPI 3.0")
    export.add_argument("--config", required=True)
    export.add_argument("--api", required=True, help="API name")
    export.add_argument("--version", help="API version (needed when several exist)")
    export.add_argument("--format", choices=("json", "yaml"), default="json")
    imported = asyncapi_commands.add_parser(
        "import", help="print the config YAML (an apis[] item) for an AsyncAPI 2.x/3.x file"
    )
    imported.add_argument("file")
    source = imported.add_mutually_exclusive_group()
    source.add_argument("--broker", help="broker name for the API (default: main)")
    source.add_argument("--endpoint", help="or the URL of the server the API fronts")
    imported.add_argument("--protocol", choices=("sse", "websocket", "websub"))
    imported.add_argument("--name")
    imported.add_argument("--context")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _report(error: ConfigError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_INVALID


def check(path: str, workers: int = 1) -> int:
    from gateway.workers import workers_problem

    try:
        config = load_config(path)
    except ConfigError as exc:
        return _report(exc)
    problem = workers_problem(config, workers)
    if problem is not None:
        return _report(problem)
    topics = sum(len(api.topics) for api in config.apis)
    print(
        f"{path}: valid ({len(config.apis)} APIs, {topics} topics, "
        f"{len(config.brokers)} brokers, {len(config.applications)} applications)"
    )
    return 0


def serve(
    path: str | None, host: str, port: int, workers: int = 1, worker: str | None = None
) -> int:
    import secrets

    from gateway.demo import demo_config, demo_instructions, demo_jobs
    from gateway.demo_upstreams import DemoUpstreams
    from gateway.logs import configure
    from gateway.runtime import Runtime
    from gateway.server import build_server
    from gateway.workers import (
        die_with_supervisor,
        reuse_port_socket,
        serve_workers,
        worker_config,
        workers_problem,
    )

    configure()
    index: int | None = None
    if worker is not None:  # one of --workers
        index, supervisor = (int(part) for part in worker.split(":"))
        die_with_supervisor(supervisor)
    if workers > 1:
        try:
            pooled = load_config(path) if path else None
        except ConfigError as exc:
            return _report(exc)
        problem = workers_problem(pooled, workers)
        if problem is not None or path is None:
            return _report(problem or ConfigError([]))
        return serve_workers(path, host, port, workers)
    demo_secret: str | None = None
    background: list[Callable[[Runtime], Awaitable[None]]] = []
    admin_token = secrets.token_urlsafe(24)
    developer_password = secrets.token_urlsafe(9)
    try:
        if path:
            config: Config = load_config(path)
            if index is not None:
                config = worker_config(config, index)
        else:
            demo_secret = secrets.token_urlsafe(18)
            upstreams = DemoUpstreams()  # listening already: the gateway's connects wait
            raw = demo_config(
                demo_secret, admin_token, clock_url=upstreams.clock_url, echo_url=upstreams.echo_url
            )
            raw["gateway"]["public_url"] = f"http://{host}:{port}"
            config = parse_config(raw)
            background.extend([*demo_jobs(developer_password), upstreams.serve])
        server = build_server(config, host, port, background=background)
    except ConfigError as exc:
        return _report(exc)
    if demo_secret is not None:
        base = f"http://{host}:{port}"
        print(demo_instructions(base, demo_secret, admin_token, developer_password), flush=True)
    if index is None:
        server.run()
    else:  # one of --workers: the port is shared, the kernel spreads connections
        server.run(sockets=[reuse_port_socket(host, port, listen=True)])
    return 0 if server.started else 1


def work(args: argparse.Namespace) -> int:
    from worker.app import WorkerOptions
    from worker.runner import run

    if not args.config:
        print("--config: a worker needs a config file", file=sys.stderr)
        return EXIT_INVALID
    if args.expires <= args.session_timeout:
        # A dead worker's partitions move after the session timeout: their events would
        # come after their windows closed.
        print("--expires: must be longer than --session-timeout", file=sys.stderr)
        return EXIT_INVALID
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _report(exc)
    options = WorkerOptions(
        app_id=args.app_id,
        expires=args.expires,
        partitions=args.partitions,
        session_timeout=args.session_timeout,
        step_budget=config.gateway.limits.step_budget,
    )
    return run(config, options)


def asyncapi_export(path: str, name: str, version: str | None, fmt: str) -> int:
    from bridge.asyncapi import export_document, to_yaml

    try:
        config = load_config(path)
    except ConfigError as exc:
        return _report(exc)
    matches = [a for a in config.apis if a.name == name and version in (None, a.version)]
    if len(matches) != 1:
        versions = ", ".join(a.version for a in config.apis if a.name == name) or "none"
        print(
            f"{'no' if not matches else 'several'} API {name!r} "
            f"{'version ' + version if version else ''} (versions: {versions}); "
            "name one with --version",
            file=sys.stderr,
        )
        return EXIT_INVALID
    document = export_document(matches[0], public_url=config.gateway.public_url, tiers=config.tiers)
    print(to_yaml(document) if fmt == "yaml" else json.dumps(document, indent=2))
    return 0


def asyncapi_import(
    path: str,
    source: tuple[str | None, str | None],
    protocol: str | None,
    name: str | None,
    context: str | None,
) -> int:
    """``source``: (broker, endpoint), one of the two set."""
    import yaml

    from bridge.asyncapi import AsyncApiError, import_document

    try:
        api = import_document(
            Path(path).read_bytes(),
            broker=source[0],
            endpoint=source[1],
            protocol=protocol,
            name=name,
            context=context,
        )
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    except AsyncApiError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    # In a config file an API is PUBLISHED unless it says otherwise; imports through the
    # management API start CREATED instead (CONTRACT §8).
    item = api.model_dump(mode="json", exclude_none=True, exclude_defaults=True, exclude={"state"})
    item = {"name": api.name, "version": api.version, **item}
    print(yaml.safe_dump({"apis": [item]}, sort_keys=False), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return check(args.config, args.workers)
    if args.command == "worker":
        return work(args)
    if args.command == "asyncapi":
        if args.asyncapi_command == "export":
            return asyncapi_export(args.config, args.api, args.version, args.format)
        source = (None if args.endpoint else args.broker or "main", args.endpoint)
        return asyncapi_import(args.file, source, args.protocol, args.name, args.context)
    return serve(args.config, args.host, args.port, args.workers, args.worker)


if __name__ == "__main__":
    sys.exit(main())

"""``cnnviz``: start the server (uvicorn) on 127.0.0.1:8000 unless told otherwise."""

from __future__ import annotations

import argparse
import os
import resource

import uvicorn

from app.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="cnnviz",
        description="Serve the CNN backprop visualizer: the page at / and the JSON API at /api "
                    "(OpenAPI docs at /docs). Limits come from CNNVIZ_* environment variables.",
    )
    parser.add_argument("--host", default=settings.host,
                        help="interface to listen on (default: %(default)s; CNNVIZ_HOST)")
    parser.add_argument("--port", type=int, default=settings.port,
                        help="TCP port (default: %(default)s; CNNVIZ_PORT)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default: %(default)s). With the default SQLite "
                             "store the workers share sessions through the database (a step "
                             "racing another on the same session gets 409); with "
                             "CNNVIZ_SESSION_STORE=redis so do server processes on other hosts; "
                             "with CNNVIZ_SESSION_STORE=memory each worker knows only its own "
                             "sessions")
    parser.add_argument("--reload", action="store_true",
                        help="restart on code changes (development; off by default)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--no-access-log", action="store_true",
                        help="do not log every request")
    return parser


# Descriptors kept beside the connections: the database, log files, the engine's data, uvicorn.
RESERVED_DESCRIPTORS = 64


def connection_limit(max_connections: int) -> int:
    """Raise this process's file-descriptor limit as far as it may go, and return how many
    connections fit under it: running out of descriptors would stop the server accepting
    anyone, so it refuses connections beyond that many instead."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(8, min(max_connections, soft - RESERVED_DESCRIPTORS))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("cnnviz: --workers must be at least 1")
    if args.reload and args.workers > 1:
        raise SystemExit("cnnviz: --reload runs a single worker; drop --workers")
    settings = get_settings()
    connections = connection_limit(settings.max_connections)
    if connections < settings.max_connections:
        # the protocol reads the setting in each worker process
        os.environ["CNNVIZ_MAX_CONNECTIONS"] = str(connections)
        get_settings.cache_clear()
    # app.server_protocol times out slow headers and bodies and bounds the connections; uvicorn's
    # own keep-alive timeout closes idle connections between requests.
    uvicorn.run("app.main:app", host=args.host, port=args.port, workers=args.workers,
                reload=args.reload, log_level=args.log_level, access_log=not args.no_access_log,
                http="app.server_protocol:GuardedHttpToolsProtocol", timeout_keep_alive=5)


if __name__ == "__main__":
    main()

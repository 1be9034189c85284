"""``cnnviz``: start the server (uvicorn) on 127.0.0.1:8000 unless told otherwise."""

from __future__ import annotations

import argparse

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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("cnnviz: --workers must be at least 1")
    if args.reload and args.workers > 1:
        raise SystemExit("cnnviz: --reload runs a single worker; drop --workers")
    uvicorn.run("app.main:app", host=args.host, port=args.port, workers=args.workers,
                reload=args.reload, log_level=args.log_level)


if __name__ == "__main__":
    main()

"""`cmvtrial serve`: the web pages and the REST API in one process (uvicorn).

The app is built by the factory (``create_app``) before the server starts, so a database that is
missing, unmigrated or unreachable is refused with the usual one-line error instead of a server
that fails on its first request. FastAPI, uvicorn and SQLAlchemy are imported inside the command:
`cmvtrial --help` stays fast.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from cmvtrial.adapters.cli.output import DbOption, handles_errors


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@handles_errors
def serve(
    db: DbOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; keep 127.0.0.1 unless a reverse proxy (HTTPS) is in front.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=64,
        help="Server processes sharing the port (uvicorn workers). Writes to one database still take turns; more "
             "processes spread the rest of each request over the CPUs. The sign-in rate limit counts per process.",
    )] = 1,
) -> None:
    """Serve the web app and the REST API (/api/v1, schema at /api/v1/openapi.json) until Ctrl-C."""
    import uvicorn

    from cmvtrial.adapters.api.app import OPENAPI_URL, create_app
    from cmvtrial.adapters.cli.context import read_settings

    from cmvtrial.services.sealing import require_key_for_listening

    settings = read_settings(db)
    # Beyond loopback is not local use: the published development key would protect nothing.
    require_key_for_listening(settings.secret_key.get_secret_value() if settings.secret_key else None, host)
    application = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"cmvtrial serving {application.state.cmvtrial.database.url}")
    typer.echo(f"  web pages: http://{shown}:{port}/   API: http://{shown}:{port}{OPENAPI_URL}")
    typer.echo("  stop with Ctrl-C")
    if workers == 1:
        uvicorn.run(application, host=host, port=port, log_config=_log_config(), proxy_headers=True)
        return
    # Each worker process builds its own app from the same settings (the factory reads them from the
    # environment); the app built above only proved the database usable and is let go.
    if application.state.cmvtrial.owns_database:
        application.state.cmvtrial.database.dispose()
    os.environ["CMVTRIAL_DATABASE_URL"] = settings.database_url
    typer.echo(f"  {workers} worker processes")
    uvicorn.run(f"{create_app.__module__}:{create_app.__name__}", factory=True, host=host, port=port,
                workers=workers, log_config=_log_config(), proxy_headers=True)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus cmvtrial's own logger (tracebacks of bugs, with their request ids)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["cmvtrial"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config

"""``triage serve``: run the HTTP API with its background jobs."""

from __future__ import annotations

from typing import Optional

import typer

from triage.cli.common import err, fail, open_service
from triage.errors import TriageError


def serve(
    host: Optional[str] = typer.Option(None, help="address to bind (default TRIAGE_HOST, 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="port (default TRIAGE_PORT, 8000)"),
    workers: int = typer.Option(1, min=1, help="server processes (each runs its SLA monitor; they coordinate)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
):
    """Run the HTTP API (OpenAPI at /docs) with the SLA monitor and the webhook dispatcher."""
    import uvicorn

    from triage.settings import get_settings

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    err(f"serving on http://{host}:{port} (API docs at /docs, review UI at /review), "
        f"database {settings.effective_database_url}")
    try:
        service = open_service()
        if not service.list_users():
            err("no users yet; create the first ones, e.g.\n"
                "  triage users add lead --role admin && triage keys create lead --scope admin --scope review\n"
                "  triage users set-password lead   (the review desk log-in)\n"
                "  triage users add zendesk --role integration && triage keys create zendesk --scope ingest")
        service.db.dispose()
        if workers > 1:
            uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers,
                        log_level=log_level)
        else:
            from api.app import create_app

            uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
    except TriageError as exc:
        raise fail(exc) from None

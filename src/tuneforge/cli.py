"""The ``tuneforge`` command line: server, migrations, and commands that drive the API."""

from __future__ import annotations

import typer

from tuneforge.config import get_settings
from tuneforge.datasets.cli import datasets_app

app = typer.Typer(help="TuneForge: self-hostable fine-tuning platform.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@app.command()
def migrate() -> None:
    """Apply every pending database migration."""
    from tuneforge.db.migrate import upgrade_to_head

    settings = get_settings()
    settings.ensure_data_dir()
    upgrade_to_head(settings.resolved_database_url)
    typer.echo(f"Database is up to date ({settings.resolved_database_url.split('@')[-1]}).")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Serve the API and dashboard."""
    import uvicorn

    from tuneforge.app import create_app

    typer.echo(f"TuneForge is starting on http://{host}:{port}  (API docs: /api/docs)")
    uvicorn.run(create_app(), host=host, port=port, log_level="info")

"""The ``tuneforge`` command line: server, migrations, and commands that drive the API."""

from __future__ import annotations

import typer

from tuneforge.config import get_settings
from tuneforge.datasets.cli import datasets_app
from tuneforge.evals.cli import evals_app
from tuneforge.exports.cli import export_model
from tuneforge.jobs.cli import jobs_app
from tuneforge.store.cli import models_app

app = typer.Typer(help="TuneForge: self-hostable fine-tuning platform.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(evals_app, name="evals")
models_app.command("export")(export_model)
app.add_typer(models_app, name="models")


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


@app.command()
def worker() -> None:
    """Run a standalone worker against the configured database until SIGTERM or Ctrl-C."""
    import logging
    import signal
    import threading

    from tuneforge.db.engine import make_engine, make_session_factory
    from tuneforge.db.migrate import ensure_migrated
    from tuneforge.errors import TuneForgeError
    from tuneforge.webhooks.delivery import DeliveryConfig, DeliveryThreads
    from tuneforge.worker.loop import Worker

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tuneforge").setLevel(logging.INFO)
    settings = get_settings()
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_migrated(engine)
    except TuneForgeError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    session_factory = make_session_factory(engine)
    job_worker = Worker(session_factory, settings)
    webhooks = DeliveryThreads(session_factory, DeliveryConfig.from_settings(settings)).start()
    typer.echo(f"Worker {job_worker.worker_id} is taking jobs; SIGTERM stops it gracefully.")
    job_worker.run_forever(stop)
    webhooks.stop()
    engine.dispose()

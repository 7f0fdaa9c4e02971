"""``tuneforge jobs``: create, watch, list, inspect and cancel jobs through the HTTP API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneforge.api_client import (
    DEFAULT_API_URL,
    ApiClient,
    ApiUrlOption,
    TokenOption,
    console_client,
    short_time,
    styled_status,
)

jobs_app = typer.Typer(help="Create, follow and manage fine-tuning jobs.", no_args_is_help=True)

JOBS = "/fine-tuning/jobs"
JobIdArgument = Annotated[str, typer.Argument(help="The job's id.")]


def _print_job(console: Console, job: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    hyperparameters = ", ".join(f"{k}={v}" for k, v in job["hyperparameters"].items())
    rows: list[tuple[str, Any]] = [
        ("id", job["id"]),
        ("name", job["name"]),
        ("status", styled_status(job["status"])),
        ("provider / model", f"{job['provider']} / {job['model']}"),
        ("dataset", job["dataset_id"]),
        ("hyperparameters", hyperparameters),
        ("progress", f"{job['progress_percentage']:.1f}%"),
        ("trained tokens", job["trained_tokens"]),
        ("estimated finish", short_time(job["estimated_finish"])),
        ("fine-tuned model", job["fine_tuned_model"]),
        ("model id", job["fine_tuned_model_id"]),
        ("created", short_time(job["created_at"])),
        ("finished", short_time(job["finished_at"])),
    ]
    for name, value in (job["latest_metrics"] or {}).items():
        rows.append((name, f"{value:.4f}"))
    if job["error"]:
        rows.append(("error", f"[red]{job['error']['code']}: {job['error']['message']}[/red]"))
    for label, value in rows:
        if value is not None:
            table.add_row(f"[bold]{label}[/bold]", str(value))
    console.print(table)


def _follow(client: ApiClient, console: Console, job_id: str) -> dict[str, Any]:
    """Show the job's live stream as a progress bar with the latest train loss; the final job."""
    job: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(job_id, total=100, loss="")
        for message in client.follow_events(f"{JOBS}/{job_id}/stream"):
            data = json.loads(message.data)
            if message.event == "status":
                job = data
                description = f"{job_id} {styled_status(job['status'])}"
                progress.update(task, completed=job["progress_percentage"], description=description)
            elif message.event == "metric" and data["name"] == "train_loss":
                progress.update(task, loss=f"train loss {data['value']:.4f}")
            elif message.event == "event":
                progress.console.print(
                    f"[dim]{short_time(data['created_at'])}[/dim] {data['message']}"
                )
    return job


def _finish_following(client: ApiClient, console: Console, job_id: str) -> None:
    job = _follow(client, console, job_id)
    _print_job(console, job)
    if job.get("status") != "succeeded":
        raise typer.Exit(1)


@jobs_app.command()
def create(
    dataset: Annotated[str, typer.Option("--dataset", help="Id of a validated dataset.")],
    model: Annotated[str, typer.Option("--model", help="Base model to fine-tune.")],
    provider: Annotated[str | None, typer.Option(help="Defaults to the model's provider.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: auto).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: auto).")] = None,
    lr_multiplier: Annotated[
        float | None, typer.Option(help="Learning-rate multiplier (default: auto).")
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Added to the model's name.")] = None,
    name: Annotated[str | None, typer.Option(help="A name for the job.")] = None,
    validation_dataset: Annotated[
        str | None, typer.Option(help="Id of a validated dataset to validate on.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Watch the job live until it ends.")
    ] = False,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """Create a job; with --follow, show its progress until it ends (exit 1 unless it succeeds)."""
    chosen = {
        "n_epochs": epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": lr_multiplier,
    }
    body = {
        "dataset_id": dataset,
        "model": model,
        "provider": provider,
        "hyperparameters": {k: v for k, v in chosen.items() if v is not None},
        "suffix": suffix,
        "name": name,
        "validation_dataset_id": validation_dataset,
    }
    with console_client(api_url, token) as (client, console):
        job = client.post(JOBS, {k: v for k, v in body.items() if v is not None})
        if not follow:
            _print_job(console, job)
            return
        console.print(f"Created job [bold]{job['id']}[/bold]")
        _finish_following(client, console, job["id"])


@jobs_app.command(name="follow")
def follow_job(
    job_id: JobIdArgument, api_url: ApiUrlOption = DEFAULT_API_URL, token: TokenOption = None
) -> None:
    """Watch a job live until it ends (exit 1 unless it succeeds)."""
    with console_client(api_url, token) as (client, console):
        _finish_following(client, console, job_id)


@jobs_app.command(name="list")
def list_jobs(
    status: Annotated[
        list[str] | None, typer.Option(help="Only jobs in this status (repeatable).")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's jobs.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only jobs on this dataset.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """List jobs, newest first."""
    with console_client(api_url, token) as (client, console):
        page = client.get(
            JOBS, status=status, provider=provider, dataset_id=dataset, limit=limit, offset=offset
        )
        table = Table("id", "name", "status", "provider", "model", "progress", "created (UTC)")
        for job in page["items"]:
            table.add_row(
                job["id"],
                job["name"] or "",
                styled_status(job["status"]),
                job["provider"],
                job["model"],
                f"{job['progress_percentage']:.0f}%",
                short_time(job["created_at"]),
            )
        console.print(table)
        shown = len(page["items"])
        console.print(f"{shown} of {page['total']} jobs (offset {page['offset']})")


@jobs_app.command(name="get")
def get_job(
    job_id: JobIdArgument, api_url: ApiUrlOption = DEFAULT_API_URL, token: TokenOption = None
) -> None:
    """Show a job: status, progress, hyperparameters, latest metrics, error and model."""
    with console_client(api_url, token) as (client, console):
        _print_job(console, client.get(f"{JOBS}/{job_id}"))


@jobs_app.command()
def cancel(
    job_id: JobIdArgument, api_url: ApiUrlOption = DEFAULT_API_URL, token: TokenOption = None
) -> None:
    """Cancel a job; one a provider already runs stays 'cancelling' until it stops."""
    with console_client(api_url, token) as (client, console):
        job = client.post(f"{JOBS}/{job_id}/cancel")
        console.print(f"Job {job['id']} is {styled_status(job['status'])}")


@jobs_app.command()
def events(
    job_id: JobIdArgument,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    after: Annotated[int | None, typer.Option(help="Only events older than this id.")] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """List a job's events, newest first."""
    with console_client(api_url, token) as (client, console):
        page = client.get(f"{JOBS}/{job_id}/events", limit=limit, after=after)
        table = Table("id", "time (UTC)", "level", "message")
        for event in page["data"]:
            level = "[red]error[/red]" if event["level"] == "error" else event["level"]
            table.add_row(
                str(event["id"]), short_time(event["created_at"]), level, event["message"]
            )
        console.print(table)
        if page["has_more"]:
            oldest = page["data"][-1]["id"]
            console.print(f"Older events: tuneforge jobs events {job_id} --after {oldest}")

"""``tuneforge datasets``: upload, validate and list datasets by driving the HTTP API.

The commands talk to a running server rather than the database, so they work from any
machine that can reach it and go through the same checks and scoping as every other client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tuneforge.api_client import DEFAULT_API_URL, ApiClient, ApiError, ApiUrlOption, TokenOption

datasets_app = typer.Typer(
    help="Upload, validate and list datasets through the TuneForge API.", no_args_is_help=True
)
console = Console()

DATASETS = "/fine-tuning/datasets"
SHOWN_ERRORS = 20
# Validation runs inside the upload request, so a large file needs a long read timeout.
TIMEOUT = httpx.Timeout(30.0, read=900.0)

Model = Annotated[str | None, typer.Option("--model", help="Base model to validate against.")]


@contextmanager
def _api(api_url: str, token: str | None) -> Iterator[ApiClient]:
    """A client whose errors become one red line (with the HTTP status) and exit status 1."""
    try:
        with ApiClient(api_url, token, timeout=TIMEOUT) as client:
            yield client
    except ApiError as exc:
        label = f"Error {exc.status_code}:" if exc.status_code else "Error:"
        console.print(f"[red]{label}[/red] {exc.detail}")
        raise typer.Exit(1) from exc


def _status(status: str) -> str:
    colour = {"valid": "green", "invalid": "red"}.get(status, "yellow")
    return f"[{colour}]{status}[/{colour}]"


def _key_values(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


def _print_report(dataset: dict[str, Any]) -> None:
    report = dataset.get("validation_report") or {}
    console.print(
        _key_values(
            "Dataset",
            [
                ("id", dataset["id"]),
                ("name", dataset["name"]),
                ("status", _status(dataset["status"])),
                ("model", report.get("model")),
                ("tokenizer", report.get("tokenizer")),
                ("examples", f"{dataset['valid_examples']} valid of {dataset['total_examples']}"),
                (
                    "train / validation",
                    f"{report.get('train_examples')} / {report.get('validation_examples')}",
                ),
                ("tokens", dataset["total_tokens"]),
            ],
        )
    )
    for kind in ("error", "warning"):
        counts = report.get(f"{kind}_counts") or {}
        if counts:
            table = Table(title=f"{kind.title()}s by kind", title_justify="left")
            table.add_column("code")
            table.add_column("examples", justify="right")
            for code, count in sorted(counts.items(), key=lambda item: -item[1]):
                table.add_row(code, str(count))
            console.print(table)
    errors = (report.get("errors") or [])[:SHOWN_ERRORS]
    if errors:
        table = Table(title=f"First {len(errors)} errors", title_justify="left")
        table.add_column("line", justify="right")
        table.add_column("code")
        table.add_column("message")
        for error in errors:
            table.add_row(str(error["line"]), error["code"], error["message"])
        console.print(table)
    distributions = Table(title="Distributions (valid examples)", title_justify="left")
    for column in ("", "min", "p5", "median", "mean", "p95", "max"):
        distributions.add_column(column, justify="right" if column else "left")
    for key in ("messages_per_example", "tokens_per_example", "assistant_tokens_per_example"):
        values = report.get(key)
        if values:
            cells = [f"{values[c]:g}" for c in ("min", "p5", "median", "mean", "p95", "max")]
            distributions.add_row(key.replace("_", " "), *cells)
    if distributions.row_count:
        console.print(distributions)
    if report:
        cost = report.get("estimated_cost_usd")
        console.print(
            _key_values(
                "Training estimate",
                [
                    ("epochs", report.get("n_epochs")),
                    ("billed tokens / epoch", report.get("billed_tokens_per_epoch")),
                    ("billed tokens", report.get("total_billed_tokens")),
                    ("estimated cost (USD)", None if cost is None else f"{cost:.4f}"),
                    ("over context length", report["over_context_limit"]["count"]),
                    (
                        "exact / near duplicates",
                        f"{report['exact_duplicates']['count']} / "
                        f"{report['near_duplicates']['count']}",
                    ),
                    ("train-validation overlap", report.get("train_validation_overlap")),
                ],
            )
        )


@datasets_app.command()
def upload(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help=".jsonl or .csv")
    ],
    name: Annotated[str | None, typer.Option(help="Dataset name; defaults to the file's.")] = None,
    description: Annotated[str | None, typer.Option(help="Free-text description.")] = None,
    model: Model = None,
    validation_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share held out for validation.")
    ] = 0.0,
    split_seed: Annotated[int, typer.Option(min=0, help="Seed of the stable split.")] = 0,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """Upload a dataset file with a progress bar, then print its validation report."""
    fields = {
        "name": name or file.stem,
        "validation_fraction": str(validation_fraction),
        "split_seed": str(split_seed),
    }
    if description:
        fields["description"] = description
    if model:
        fields["model"] = model
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress, _api(api_url, token) as client:
        task = progress.add_task(f"Uploading {file.name}", total=file.stat().st_size)

        def advance(size: int) -> None:
            progress.advance(task, size)
            if progress.tasks[task].finished:
                progress.update(task, description="Validating on the server")

        dataset = client.upload(DATASETS, fields, file, advance)
    _print_report(dataset)


@datasets_app.command()
def validate(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id.")],
    model: Model = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """Re-validate a dataset's stored examples and print the report; exit 1 if invalid."""
    body = {"model": model} if model else {}
    with _api(api_url, token) as client, console.status("Validating"):
        dataset = client.post(f"{DATASETS}/{dataset_id}/validate", body)
    _print_report(dataset)
    if dataset["status"] != "valid":
        raise typer.Exit(1)


@datasets_app.command("list")
def list_datasets(
    status: Annotated[str | None, typer.Option(help="uploaded, valid or invalid.")] = None,
    name: Annotated[str | None, typer.Option(help="Name contains this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """List the organization's datasets, newest first."""
    with _api(api_url, token) as client:
        page = client.get(DATASETS, limit=limit, status=status or None, name=name or None)
    table = Table(title=f"Datasets ({page['total']})", title_justify="left")
    for column in ("id", "name", "format", "status", "examples", "tokens", "created"):
        table.add_column(column, no_wrap=column == "id")
    for item in page["items"]:
        table.add_row(
            item["id"],
            item["name"],
            item["format"],
            _status(item["status"]),
            f"{item['valid_examples']}/{item['total_examples']}",
            str(item["total_tokens"]),
            item["created_at"][:19].replace("T", " "),
        )
    console.print(table)

"""``tuneforge datasets``: upload, validate and list datasets by driving the HTTP API.

The commands talk to a running server rather than the database, so they work from any
machine that can reach it and go through the same checks and scoping as every other client.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
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

datasets_app = typer.Typer(
    help="Upload, validate and list datasets through the TuneForge API.", no_args_is_help=True
)
console = Console()

CHUNK_BYTES = 256 * 1024
SHOWN_ERRORS = 20
# Validation runs inside the upload request, so a large file needs a long read timeout.
TIMEOUT = httpx.Timeout(30.0, read=900.0)

ApiUrl = Annotated[
    str,
    typer.Option("--api-url", envvar="TUNEFORGE_API_URL", help="Base URL of the TuneForge server."),
]
Token = Annotated[
    str,
    typer.Option(
        "--token", envvar="TUNEFORGE_TOKEN", help="An API key (tf-...) or a JWT access token."
    ),
]
Model = Annotated[str | None, typer.Option("--model", help="Base model to validate against.")]
DEFAULT_API_URL = "http://127.0.0.1:8000"


def _client(api_url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=api_url.rstrip("/"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )


def _send(api_url: str, call: Callable[[], httpx.Response]) -> Any:
    """The JSON body of a successful call; otherwise the server's error, and exit code 1."""
    try:
        response = call()
    except httpx.TransportError as exc:
        console.print(f"[red]Cannot reach {api_url}:[/red] {exc}")
        raise typer.Exit(1) from exc
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    console.print(f"[red]Error {response.status_code}:[/red] {detail}")
    raise typer.Exit(1)


def _multipart(
    fields: dict[str, str], path: Path, on_chunk: Callable[[int], None]
) -> tuple[str, int, Iterator[bytes]]:
    """A streamed multipart body: (content type, exact length, chunks read as they go).

    The exact length goes out as Content-Length, so an oversized file is refused at once.
    """
    boundary = secrets.token_hex(16)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    filename = path.name.replace('"', "%22")
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                on_chunk(len(chunk))
                yield chunk
        yield tail

    length = len(head) + path.stat().st_size + len(tail)
    return f"multipart/form-data; boundary={boundary}", length, chunks()


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
    token: Token,
    name: Annotated[str | None, typer.Option(help="Dataset name; defaults to the file's.")] = None,
    description: Annotated[str | None, typer.Option(help="Free-text description.")] = None,
    model: Model = None,
    validation_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share held out for validation.")
    ] = 0.0,
    split_seed: Annotated[int, typer.Option(min=0, help="Seed of the stable split.")] = 0,
    api_url: ApiUrl = DEFAULT_API_URL,
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
    with progress, _client(api_url, token) as client:
        task = progress.add_task(f"Uploading {file.name}", total=file.stat().st_size)

        def advance(size: int) -> None:
            progress.advance(task, size)
            if progress.tasks[task].finished:
                progress.update(task, description="Validating on the server")

        content_type, length, body = _multipart(fields, file, advance)
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        dataset = _send(
            api_url, lambda: client.post("/fine-tuning/datasets", content=body, headers=headers)
        )
    _print_report(dataset)


@datasets_app.command()
def validate(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id.")],
    token: Token,
    model: Model = None,
    api_url: ApiUrl = DEFAULT_API_URL,
) -> None:
    """Re-validate a dataset's stored examples and print the report; exit 1 if invalid."""
    body = {"model": model} if model else {}
    with _client(api_url, token) as client, console.status("Validating"):
        dataset = _send(
            api_url,
            lambda: client.post(f"/fine-tuning/datasets/{dataset_id}/validate", json=body),
        )
    _print_report(dataset)
    if dataset["status"] != "valid":
        raise typer.Exit(1)


@datasets_app.command("list")
def list_datasets(
    token: Token,
    status: Annotated[str | None, typer.Option(help="uploaded, valid or invalid.")] = None,
    name: Annotated[str | None, typer.Option(help="Name contains this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    api_url: ApiUrl = DEFAULT_API_URL,
) -> None:
    """List the organization's datasets, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    if name:
        params["name"] = name
    with _client(api_url, token) as client:
        page = _send(api_url, lambda: client.get("/fine-tuning/datasets", params=params))
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

"""``tuneforge models export``: queue an export through the API, watch a worker write it,
then download the file and check its SHA-256."""

from __future__ import annotations

import enum
import hashlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from tuneforge.api_client import (
    DEFAULT_API_URL,
    ApiClient,
    ApiUrlOption,
    TokenOption,
    console_client,
    styled_status,
)

POLL_SECONDS = 1.0
HASH_CHUNK_BYTES = 1024 * 1024
FINISHED = frozenset({"succeeded", "failed"})


class Format(enum.StrEnum):
    ADAPTER = "adapter"
    MERGED = "merged"
    GGUF = "gguf"
    OLLAMA = "ollama"


class Quantization(enum.StrEnum):
    F16 = "f16"
    Q8_0 = "q8_0"


def _follow(client: ApiClient, console: Console, export: dict[str, Any]) -> dict[str, Any]:
    """Poll the export until it ends, drawn as a bar with the worker's current stage."""
    url = f"/fine-tuning/models/{export['model_id']}/exports/{export['id']}"
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(export["id"], total=1.0)
        while True:
            progress.update(
                task,
                completed=export["progress"],
                description=f"{styled_status(export['status'])} {export['stage'] or ''}",
            )
            if export["status"] in FINISHED:
                return export
            time.sleep(POLL_SECONDS)
            export = client.get(url)


def _download(client: ApiClient, console: Console, export: dict[str, Any], target: Path) -> str:
    """Stream the file next to ``target``, then move it there; its SHA-256."""
    partial = target.with_name(f".{target.name}.partial")
    columns = (TextColumn("downloading"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("download", total=export["size_bytes"])

        def advance(size: int, total: int | None) -> None:
            progress.update(task, advance=size, total=total)

        headers = client.download(export["download_url"], partial, advance)
    digest = hashlib.sha256()
    with partial.open("rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    expected = headers.get("X-Content-SHA256") or export["sha256"]
    if digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        console.print(f"[red]Error:[/red] the download's SHA-256 is not {expected}; try again")
        raise typer.Exit(1)
    partial.replace(target)
    return expected


def export_model(
    model_id: Annotated[str, typer.Argument(help="The fine-tuned model's id.")],
    export_format: Annotated[Format, typer.Option("--format", help="What to export.")],
    quantization: Annotated[
        Quantization | None,
        typer.Option(help="GGUF weights for gguf and ollama (default f16)."),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="ollama: an agent the model is deployed to; its system prompt "
            "becomes the Modelfile's SYSTEM."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Where to save the file (default: its name, here)."),
    ] = None,
    download: Annotated[
        bool, typer.Option(help="Download the file once written (--no-download: just queue).")
    ] = True,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """Export a fine-tuned model: a worker writes the file while a bar shows its progress,
    then it is downloaded and its SHA-256 checked (exit 1 unless it succeeds)."""
    body = {"format": export_format.value, "quantization": quantization, "agent_id": agent}
    with console_client(api_url, token) as (client, console):
        created = client.post(
            f"/fine-tuning/models/{model_id}/exports",
            {key: value for key, value in body.items() if value is not None},
        )
        console.print(f"Queued export [bold]{created['id']}[/bold] ({export_format.value})")
        if not download:
            return
        try:
            finished = _follow(client, console, created)
        except KeyboardInterrupt:
            console.print("Stopped watching; the export goes on on the server.")
            raise typer.Exit(130) from None
        if finished["status"] != "succeeded":
            console.print(f"[red]Export failed:[/red] {finished['error']}")
            raise typer.Exit(1)
        target = output or Path(finished["file_name"])
        if target.is_dir():
            target = target / finished["file_name"]
        sha256 = _download(client, console, finished, target)
        console.print(f"Saved [bold]{target}[/bold] ({finished['size_bytes']:,} bytes)")
        console.print(f"sha256 {sha256}")

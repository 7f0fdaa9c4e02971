"""``tuneforge evals``: run an evaluation and watch it, show, list and cancel them, through
the HTTP API."""

from __future__ import annotations

import enum
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneforge.api_client import (
    DEFAULT_API_URL,
    TERMINAL_STATUSES,
    ApiClient,
    ApiUrlOption,
    TokenOption,
    console_client,
    short_time,
    styled_status,
)

evals_app = typer.Typer(
    help="Evaluate models on a dataset's examples and compare them.", no_args_is_help=True
)

EVALS = "/evals"
POLL_SECONDS = 1.0
EvalIdArgument = Annotated[str, typer.Argument(help="The evaluation's id.")]


class Split(enum.StrEnum):
    VALIDATION = "validation"
    TRAIN = "train"
    ALL = "all"


class GraderChoice(enum.StrEnum):
    EXACT = "exact"
    CONTAINS = "contains"
    JSON_MATCH = "json_match"
    VALID_JSON = "valid_json"
    SIMILARITY = "similarity"


# The API's grader for each choice, with its defaults: ``contains`` looks for the expected
# reply, ``similarity`` passes at 0.8.
GRADERS: dict[GraderChoice, dict[str, str]] = {
    GraderChoice.EXACT: {"type": "string_check", "operation": "eq"},
    GraderChoice.CONTAINS: {"type": "contains"},
    GraderChoice.JSON_MATCH: {"type": "json_match"},
    GraderChoice.VALID_JSON: {"type": "valid_json"},
    GraderChoice.SIMILARITY: {"type": "similarity"},
}


def _grader_label(grader: dict[str, Any]) -> str:
    return grader.get("name") or " ".join(filter(None, (grader["type"], grader.get("operation"))))


def _print_eval(console: Console, run: dict[str, Any]) -> None:
    """The run's facts, then its scores: the first model is the baseline of W/T/L."""
    facts = Table(show_header=False, box=None, pad_edge=False)
    rows: list[tuple[str, Any]] = [
        ("id", run["id"]),
        ("name", run["name"]),
        ("status", styled_status(run["status"])),
        ("dataset", f"{run['dataset_id']} ({run['split']})"),
        ("models", ", ".join(m["label"] or m["reference"] for m in run["models"])),
        ("graders", ", ".join(_grader_label(g) for g in run["graders"])),
        ("progress", f"{run['examples_done']} of {run['examples_total']} examples"),
        ("created", short_time(run["created_at"])),
        ("finished", short_time(run["finished_at"])),
    ]
    if run["error"]:
        rows.append(("error", f"[red]{run['error']}[/red]"))
    for label, value in rows:
        if value is not None:
            facts.add_row(f"[bold]{label}[/bold]", str(value))
    console.print(facts)
    if not run["summary"]:
        return
    scores = Table("model", "mean score", "pass rate", "W / T / L", title="Scores")
    for index, row in enumerate(run["summary"]):
        versus = "baseline" if index == 0 else f"{row['wins']} / {row['ties']} / {row['losses']}"
        scores.add_row(row["model"], f"{row['mean_score']:.3f}", f"{row['pass_rate']:.1%}", versus)
    console.print(scores)


def _follow(client: ApiClient, console: Console, run: dict[str, Any]) -> dict[str, Any]:
    """Poll the run until it ends, drawn as a bar of examples graded; the final run."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(run["id"], total=run["examples_total"])
        while True:
            progress.update(
                task,
                completed=run["examples_done"],
                total=run["examples_total"],
                description=f"{run['id']} {styled_status(run['status'])}",
            )
            if run["status"] in TERMINAL_STATUSES:
                return run
            time.sleep(POLL_SECONDS)
            run = client.get(f"{EVALS}/{run['id']}")


@evals_app.command()
def run(
    dataset: Annotated[str, typer.Option("--dataset", help="Id of the dataset to evaluate on.")],
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            help="A fine-tuned model's id or name, or a base model (repeatable; the first "
            "is the baseline).",
        ),
    ],
    split: Annotated[Split, typer.Option(help="Which valid examples to run.")] = Split.VALIDATION,
    max_examples: Annotated[
        int | None, typer.Option(min=1, max=2_000, help="At most this many (default 200).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, max=2_048, help="Per reply (default 256).")
    ] = None,
    grader: Annotated[
        list[GraderChoice] | None,
        typer.Option(help="Repeatable (default: the one the expected replies call for)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for the evaluation.")] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """Queue an evaluation, show its progress until it ends, then each model's scores
    (exit 1 unless it succeeds)."""
    body = {
        "dataset_id": dataset,
        "models": [{"reference": reference} for reference in model],
        "split": split.value,
        "max_examples": max_examples,
        "max_tokens": max_tokens,
        "graders": [GRADERS[choice] for choice in grader] if grader else None,
        "name": name,
    }
    with console_client(api_url, token) as (client, console):
        created = client.post(EVALS, {k: v for k, v in body.items() if v is not None})
        console.print(
            f"Created evaluation [bold]{created['id']}[/bold] "
            f"of {created['examples_total']} examples"
        )
        try:
            finished = _follow(client, console, created)
        except KeyboardInterrupt:
            console.print(
                f"Stopped watching; the evaluation goes on. "
                f"`tuneforge evals cancel {created['id']}` stops it."
            )
            raise typer.Exit(130) from None
        _print_eval(console, finished)
        if finished["status"] != "succeeded":
            raise typer.Exit(1)


@evals_app.command()
def show(
    eval_id: EvalIdArgument, api_url: ApiUrlOption = DEFAULT_API_URL, token: TokenOption = None
) -> None:
    """Show an evaluation: status, progress and, once it succeeded, each model's scores."""
    with console_client(api_url, token) as (client, console):
        _print_eval(console, client.get(f"{EVALS}/{eval_id}"))


@evals_app.command(name="list")
def list_evals(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    token: TokenOption = None,
) -> None:
    """List evaluations, newest first."""
    with console_client(api_url, token) as (client, console):
        page = client.get(EVALS, limit=limit, offset=offset)
        table = Table("id", "name", "status", "dataset", "models", "examples", "created (UTC)")
        for item in page["items"]:
            table.add_row(
                item["id"],
                item["name"] or "",
                styled_status(item["status"]),
                item["dataset_id"],
                ", ".join(m["label"] or m["reference"] for m in item["models"]),
                f"{item['examples_done']}/{item['examples_total']}",
                short_time(item["created_at"]),
            )
        console.print(table)
        console.print(f"{len(page['items'])} of {page['total']} evaluations (offset {offset})")


@evals_app.command()
def cancel(
    eval_id: EvalIdArgument, api_url: ApiUrlOption = DEFAULT_API_URL, token: TokenOption = None
) -> None:
    """Cancel an evaluation: at once if queued, else after the examples in hand."""
    with console_client(api_url, token) as (client, console):
        cancelled = client.post(f"{EVALS}/{eval_id}/cancel")
        if cancelled["status"] == "cancelled":
            console.print(f"Evaluation {cancelled['id']} is {styled_status('cancelled')}")
        else:
            console.print(f"Evaluation {cancelled['id']} stops after the examples in hand")

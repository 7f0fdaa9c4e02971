"""What a training run tells the worker, through files in the job directory.

Reporting only reports: the trainer saves checkpoints and the adapter itself, then says
so here. Only rank 0 writes (events and the status file); on other ranks every method is
a no-op, so the training loop calls them unconditionally.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.providers.local.jobdir import JobPaths, ProgressLog, read_spec, update_status

if TYPE_CHECKING:
    from tuneforge.providers.local.plan import Plan
    from tuneforge.providers.local.stopping import EarlyStopping

_SPEED_SMOOTHING = 0.3


class Reporter:
    def __init__(self, paths: JobPaths, *, enabled: bool) -> None:
        self.paths = paths
        self.enabled = enabled
        self._log = ProgressLog(paths.progress) if enabled else None
        self._seconds_per_step: float | None = None
        self._last_report: float | None = None

    def _emit(self, event_type: str, message: str, **kwargs: Any) -> None:
        if self._log is not None:
            self._log.emit(event_type, message, **kwargs)

    def dataset(self, truncated: int, dropped: int, max_seq_length: int) -> None:
        """Say how many training examples (or preference pairs) truncation cut or emptied."""
        if truncated:
            self._emit(
                "truncation",
                f"{truncated} training examples were longer than {max_seq_length} tokens "
                "and were truncated",
                level="warning",
                data={"truncated": truncated, "max_seq_length": max_seq_length},
            )
        if dropped:
            self._emit(
                "truncation",
                f"{dropped} training examples had no assistant tokens left to learn "
                "and were skipped",
                level="warning",
                data={"dropped": dropped},
            )

    def started(self, plan: Plan, start_step: int, trained_tokens: int) -> None:
        if not self.enabled:
            return
        status = update_status(
            self.paths,
            state="running",
            step=start_step,
            total_steps=plan.total_steps,
            n_epochs=plan.n_epochs,
            trained_tokens=trained_tokens,
            plan=plan.as_dict(),
            pid=os.getpid(),
        )
        attempt = status.get("attempt", 1)
        if start_step:
            self._emit(
                "resumed",
                f"Resumed from checkpoint step-{start_step} (attempt {attempt})",
                step=start_step,
            )
        else:
            self._emit(
                "started",
                f"Training started: {plan.total_steps} steps, {plan.n_epochs} epochs, "
                f"batch size {plan.batch_size}, learning rate {plan.learning_rate:.2e}",
                data=plan.as_dict(),
            )
        self._last_report = time.monotonic()

    def epoch(self, epoch: int, n_epochs: int, step: int) -> None:
        self._emit("epoch", f"Epoch {epoch}/{n_epochs}", step=step, data={"epoch": epoch})

    def step(self, step: int, metrics: dict[str, float], trained_tokens: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - (self._last_report or now)
        self._last_report = now
        self._seconds_per_step = (
            elapsed
            if self._seconds_per_step is None
            else _SPEED_SMOOTHING * elapsed + (1 - _SPEED_SMOOTHING) * self._seconds_per_step
        )
        status = update_status(
            self.paths,
            step=step,
            trained_tokens=trained_tokens,
            seconds_per_step=self._seconds_per_step,
            latest_metrics=metrics,
        )
        parts = ", ".join(f"{name}={value:.4g}" for name, value in metrics.items())
        self._emit(
            "metrics",
            f"Step {step}/{status['total_steps']}: {parts}",
            step=step,
            metrics=metrics,
            data={"total_steps": status["total_steps"]},
        )

    def skipped(self, step: int) -> None:
        self._emit(
            "skipped_step",
            f"Step {step} left the weights unchanged: its gradients were not finite",
            level="warning",
            step=step,
        )

    def checkpoint_saved(self, step: int, path: Path) -> None:
        self._emit(
            "checkpoint", f"Saved checkpoint step-{step}", step=step, data={"path": str(path)}
        )

    def holdout(self, positions: list[int], examples: int, fraction: float) -> None:
        """Say how the run will be judged when the job brought no validation data, and which
        lines of the training file (0-based) were held out."""
        if positions:
            self._emit(
                "holdout",
                f"Held out {len(positions)} of {examples} training examples to measure valid "
                "loss (no validation data was given); set holdout_fraction to 0 to train on all",
                data={
                    "held_out": len(positions),
                    "examples": examples,
                    "fraction": fraction,
                    "positions": positions,
                },
            )
        elif fraction > 0:
            self._emit(
                "holdout",
                f"No examples held out: {examples} training examples are too few to spare "
                "any, so there is no valid loss and no early stopping",
                level="warning",
                data={"held_out": 0, "examples": examples, "fraction": fraction},
            )

    def overfitting(self, step: int, valid_loss: float, stopper: EarlyStopping) -> None:
        self._emit(
            "overfitting",
            f"Possible overfitting at step {step}: valid loss {valid_loss:.4g} is above its best "
            f"({stopper.best_loss:.4g} at step {stopper.best_step}) while train loss keeps "
            "falling; the model is made from the best step",
            level="warning",
            step=step,
            data={"valid_loss": valid_loss, **_best(stopper)},
        )

    def stopped_early(self, step: int, total_steps: int, stopper: EarlyStopping) -> None:
        if self.enabled:
            update_status(self.paths, stopped_early_at=step)
        self._emit(
            "early_stopped",
            f"Stopped early at step {step} of {total_steps}: valid loss did not improve by more "
            f"than {stopper.threshold():.3g} in {stopper.patience} evaluations (best "
            f"{stopper.best_loss:.4g} at step {stopper.best_step})",
            step=step,
            data={"planned_steps": total_steps, "patience": stopper.patience, **_best(stopper)},
        )

    def succeeded(
        self, trained_tokens: int, *, best_step: int | None, best_valid_loss: float | None
    ) -> None:
        """Say the run is done; the trainer has written the final adapter by now."""
        if not self.enabled:
            return
        spec = read_spec(self.paths)
        update_status(
            self.paths,
            state="succeeded",
            trained_tokens=trained_tokens,
            fine_tuned_model=spec.fine_tuned_model,
            best_step=best_step,
        )
        made_from = (
            ""
            if best_step is None
            else (
                f", made from step {best_step}, where valid loss was lowest ({best_valid_loss:.4g})"
            )
        )
        self._emit(
            "finished",
            f"Training finished; model {spec.fine_tuned_model} is ready{made_from}",
            data={
                "fine_tuned_model": spec.fine_tuned_model,
                "trained_tokens": trained_tokens,
                "best_step": best_step,
                "best_valid_loss": best_valid_loss,
            },
        )

    def cancelled(self, step: int) -> None:
        if not self.enabled:
            return
        update_status(self.paths, state="cancelled", step=step)
        self._emit("cancelled", f"Training cancelled at step {step}", step=step)

    def paused(self, step: int) -> None:
        if not self.enabled:
            return
        update_status(self.paths, state="paused", step=step)
        self._emit("paused", f"Training paused at step {step}", step=step)

    def failed(self, exc: BaseException) -> None:
        if not self.enabled:
            return
        message = f"{type(exc).__name__}: {exc}"
        update_status(self.paths, state="failed", error=message)
        self._emit(
            "failed",
            f"Training failed: {message}",
            level="error",
            data={"traceback": traceback.format_exc(limit=8)},
        )


def _best(stopper: EarlyStopping) -> dict[str, Any]:
    return {"best_step": stopper.best_step, "best_valid_loss": stopper.best_loss}

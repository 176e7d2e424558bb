"""``LocalSFTTrainer``: a compact supervised fine-tuning loop for LoRA or full fine-tuning.

Written out rather than using TRL's ``SFTTrainer`` because it is several times faster on CPU
(``benchmarks/bench_training.py`` measures both side by side). Where the time goes:

- padding-free packing with per-example attention (``packing.py``) instead of padded batches;
- logits only where loss is taken (``steps.py``): the decoder body runs on all tokens, then
  ``lm_head`` (49k columns for SmolLM2) is applied to the hidden states of assistant positions;
- for LoRA the frozen base stays in bf16 while the adapters are fp32 under autocast, so no base
  weight is cast on any step; full fine-tuning keeps fp32 master weights under autocast
  (``student.py``);
- no gradient checkpointing (a 135M model's activations fit), LoRA dropout 0 by default.

The loop: AdamW, linear warm-up then linear decay, gradient clipping, the loss being the mean over
all target tokens of a batch however it is split into passes. Deterministic for a given ``seed``
(initialisation from ``torch.manual_seed``, per-epoch order from a seeded generator). After each
epoch: validation loss/accuracy and the task's own measure (``measure.py``), a checkpoint in
``<output>/checkpoints/epoch-<N>/`` (PEFT adapter or full model, plus ``trainer_state.pt``;
``checkpoints.py``), from which a restarted run resumes. With a validation split (a file, or
examples held out of the training file) the model is scored before training too, the run stops
early once the measure stops improving, and the final ``adapter/`` is the best epoch's weights, or
the base model when no epoch beat it (``selection.py``).

This module holds the run itself: setup, the epochs and their steps, the events and progress it
reports and the result; the final ``adapter/`` and ``merged/`` folders are written by
``outputs.py``. With ``devices`` > 1 each of several processes runs this loop on its share of
every step and the gradients are summed over them (``parallel.py``); one process is unchanged.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery import weights
from distillery.memory import release_free_memory
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.training.local import packing
from distillery.training.local.checkpoints import (
    ADAPTER,
    checkpoint_dir,
    copy_weights,
    load_latest,
    save_checkpoint,
    save_weights,
)
from distillery.training.local.config import DataShape, LocalSFTConfig, auto_holdout
from distillery.training.local.data import (
    IGNORE_INDEX,
    TokenizedDataset,
    TokenizedExample,
    load_chat_dataset,
)
from distillery.training.local.greedy import greedy_answers
from distillery.training.local.measure import (
    MeasureScorer,
    MeasureTotals,
    TaskMeasure,
    infer_measure,
    score_answers,
    settled,
)
from distillery.training.local.outputs import merge_adapter, write_adapter, write_training_record
from distillery.training.local.parallel import DataParallel
from distillery.training.local.selection import (
    Point,
    choose,
    data_shape,
    explain,
    hold_out,
    should_stop,
)
from distillery.training.local.steps import StepStats, epoch_batches, make_batches, target_loss
from distillery.training.local.student import (
    autocast,
    install_stop_hooks,
    load_student,
    make_optimizer,
    resolve_runtime,
)

if TYPE_CHECKING:
    import torch

EmitFn = Callable[[str, str, str, dict[str, Any] | None], None]  # (type, level, message, data)


class TrainingCancelled(Exception):
    """Raised inside the loop (even mid-forward or mid-backward) once a stop is requested."""


@dataclass
class TrainingResult:
    trained_tokens: int
    adapter_path: Path
    merged_path: Path | None
    metrics: dict[str, Any]
    hyperparameters: dict[str, Any]
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Progress:
    """Where the run stands: carried across epochs and saved in each checkpoint."""

    total_steps: int
    step: int = 0
    start_epoch: int = 1
    trained_tokens: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None  # validation metrics before training


class LocalSFTTrainer:
    """Fine-tune ``config.base_model`` on a chat JSONL file, writing into ``output_dir``."""

    def __init__(
        self,
        config: LocalSFTConfig,
        training_file: str | Path,
        validation_file: str | Path | None,
        output_dir: str | Path,
        *,
        emit: EmitFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: ProgressCallback | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        """``parallel``: this process's rank when ``devices`` > 1 (``parallel.py``); events,
        checkpoints and the final folders are then written by rank 0 only."""
        self.config = config
        self.parallel = parallel or DataParallel()
        self.training_file = Path(training_file)
        self.validation_file = Path(validation_file) if validation_file else None
        self.output_dir = Path(output_dir)
        self._emit = emit
        self._should_stop = should_stop or (lambda: False)
        self._progress = progress
        self.training_seconds = 0.0  # time inside optimizer steps (excludes load, eval, saving)
        self.step_timings: list[tuple[int, float]] = []  # (tokens, seconds) of this run's steps
        self.measure = TaskMeasure("tokens")  # the task's measure, inferred when data is read
        self.scorer: MeasureScorer | None = None
        self.shape = DataShape(0)  # what the automatic recipe read from the data
        self.valid_data: TokenizedDataset | None = None

    # -- events -------------------------------------------------------------------------------

    def emit(
        self, type_: str, message: str, data: dict[str, Any] | None = None, *, level: str = "info"
    ) -> None:
        if self._emit is not None and self.parallel.is_main:
            self._emit(type_, level, message, data)

    def _warn(self, message: str) -> None:
        self.emit("message", message, level="warn")

    def check_stop(self) -> None:
        if self.parallel.enabled:
            return  # the ranks agree on a stop at step boundaries (_agree_stop)
        if self._should_stop():
            raise TrainingCancelled("cancelled")

    def _agree_stop(self) -> None:
        """With several ranks: stop all of them together once any was asked to."""
        if self.parallel.enabled and self.parallel.any(self._should_stop()):
            raise TrainingCancelled("cancelled")

    # -- setup --------------------------------------------------------------------------------

    def _setup_runtime(self) -> None:
        runtime = resolve_runtime(self.config)
        if self.parallel.enabled:
            runtime.device = self.parallel.device_for(runtime.device)
            self.parallel.init(runtime.device)
        self.device = runtime.device
        self.use_bf16 = runtime.use_bf16
        self.device_type = runtime.device_type

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device_type, self.use_bf16)

    def _load_data(self) -> None:
        cfg = self.config
        source = weights.resolve_source(cfg.base_model, cfg.base_model_path)
        self.source = source
        self.tokenizer = weights.load_tokenizer(source, chat_template=cfg.chat_template)
        self.train_data = load_chat_dataset(
            self.training_file, self.tokenizer, max_length=cfg.max_length
        )
        self.measure = infer_measure(
            [ex.answer for ex in self.train_data.examples], cfg.measure_fields
        )
        if self.validation_file is not None:
            self.valid_data = load_chat_dataset(
                self.validation_file,
                self.tokenizer,
                max_length=cfg.max_length,
                what="validation file",
            )
        elif cfg.checkpoint == "best":
            self._hold_out()
        for dataset in (self.train_data, self.valid_data):
            for warning in dataset.warnings if dataset else []:
                self._warn(warning)
        self.shape = data_shape(self.train_data.examples, self.measure)
        self.config = cfg.resolve_auto(self.shape, selecting=self.selecting)
        self.scorer = (
            MeasureScorer(self.measure, self.valid_data.examples, self.tokenizer)
            if self.valid_data is not None
            else None
        )

    def _hold_out(self) -> None:
        """Without a validation file: set ``holdout`` training examples aside to choose the
        checkpoint with."""
        cfg = self.config
        examples = self.train_data.examples
        count = auto_holdout(len(examples)) if cfg.holdout == "auto" else int(cfg.holdout)
        kept, held = hold_out(examples, count, self.measure, cfg.seed)
        if not held:
            return
        self.train_data.examples = kept
        self.valid_data = TokenizedDataset(examples=held, n_lines=len(held))
        self.emit(
            "message",
            f"Held out {len(held)} of the {len(examples)} training examples as the validation "
            "split that chooses the checkpoint (no validation file was given)",
            {"holdout": len(held), "n_examples": len(examples)},
        )

    @property
    def selecting(self) -> bool:
        """Whether the checkpoint is chosen on a validation split (else the last is kept)."""
        return self.valid_data is not None and self.config.checkpoint == "best"

    def _load_model(self) -> None:
        student = load_student(self.source, self.config, device=self.device, use_bf16=self.use_bf16)
        self.student = student
        self.model = student.model
        self.causal_lm = student.causal_lm
        self.use_packing = student.use_packing
        install_stop_hooks(student.body, self.check_stop)

    def _make_optimizer(self, total_steps: int) -> None:
        optimization = make_optimizer(self.student.trainable, self.config, total_steps)
        self.optimizer = optimization.optimizer
        self.scheduler = optimization.scheduler
        self.warmup_steps = optimization.warmup_steps

    # -- forward ------------------------------------------------------------------------------

    def _batches(
        self, examples: Sequence[TokenizedExample], passes: int
    ) -> list[packing.ModelBatch]:
        pad_token_id = 0 if self.use_packing else int(self.tokenizer.pad_token_id or 0)
        return make_batches(
            examples,
            passes,
            config=self.config,
            use_packing=self.use_packing,
            pad_token_id=pad_token_id,
        )

    def _loss(
        self, batch: packing.ModelBatch, first_choice: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, int, int]:
        """Summed cross-entropy over the target positions, number correct, number of targets."""
        return target_loss(
            self.student,
            batch,
            device=self.device,
            autocast=self._autocast(),
            first_choice=first_choice,
        )

    def _train_step(self, examples: Sequence[TokenizedExample]) -> StepStats:
        import torch

        if self.parallel.enabled:
            return self._train_step_parallel(examples)
        cfg = self.config
        batches = self._batches(examples, cfg.gradient_accumulation_steps)
        n_targets = sum(int((b.targets != IGNORE_INDEX).sum()) for b in batches)
        stats = StepStats()
        for batch in batches:
            self.check_stop()
            loss, correct, targets = self._loss(batch)
            (loss / n_targets).backward()  # type: ignore[no-untyped-call]
            stats.add(StepStats(float(loss.detach()), correct, targets, batch.n_tokens))
        torch.nn.utils.clip_grad_norm_(self.student.trainable, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return stats

    def _train_step_parallel(self, examples: Sequence[TokenizedExample]) -> StepStats:
        """This rank's share of the step; the loss is normalised by the whole step's targets
        and the gradients summed over the ranks, so every rank takes the single-process step."""
        import torch

        cfg = self.config
        mine = self.parallel.shard(examples)
        batches = self._batches(mine, cfg.gradient_accumulation_steps) if mine else []
        local_targets = sum(int((b.targets != IGNORE_INDEX).sum()) for b in batches)
        n_targets = max(1.0, self.parallel.sum([local_targets])[0])
        stats = StepStats()
        for batch in batches:
            loss, correct, targets = self._loss(batch)
            (loss / n_targets).backward()  # type: ignore[no-untyped-call]
            stats.add(StepStats(float(loss.detach()), correct, targets, batch.n_tokens))
        self.parallel.reduce_gradients(self.student.trainable)
        torch.nn.utils.clip_grad_norm_(self.student.trainable, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self._reduce_stats(stats)

    def _reduce_stats(self, stats: StepStats) -> StepStats:
        """``stats`` summed over the ranks (the same on every rank)."""
        if not self.parallel.enabled:
            return stats
        loss_sum, correct, targets, tokens = self.parallel.sum(
            [stats.loss_sum, stats.correct, stats.targets, stats.tokens]
        )
        return StepStats(loss_sum, round(correct), round(targets), round(tokens))

    def evaluate(self, dataset: TokenizedDataset) -> tuple[StepStats, MeasureTotals]:
        """Loss and token accuracy over ``dataset``, and the task measure's totals (from greedy
        answers when the measure says so, else from the same teacher-forced pass)."""
        import torch

        examples = self.parallel.shard(dataset.examples)  # all of them in one process
        self.model.eval()  # type: ignore[no-untyped-call]
        stats = StepStats()
        hits: list[torch.Tensor] = []
        try:
            with torch.no_grad():
                for batch in self._batches(examples, 1) if examples else []:
                    self.check_stop()
                    loss, correct, targets = self._loss(batch, hits)
                    stats.add(StepStats(float(loss), correct, targets, batch.n_tokens))
        finally:
            self.model.train()
        totals = MeasureTotals()
        if self.scorer is not None and self.measure.generate:
            answers = greedy_answers(
                self.student,
                self.tokenizer,
                examples,
                device=self.device,
                autocast=self._autocast,
                check_stop=self.check_stop,
                finished=settled,
            )
            totals = score_answers(self.measure, [ex.answer for ex in examples], answers)
            release_free_memory()
        elif self.scorer is not None and hits:
            flat = torch.cat(hits).tolist()
            vectors, start = [], 0
            for ex in examples:
                vectors.append(flat[start : start + ex.n_target_tokens])
                start += ex.n_target_tokens
            totals = self.scorer.score(examples, vectors)
        if self.parallel.enabled:
            fields = self.measure.fields
            totals = MeasureTotals.from_list(self.parallel.sum(totals.as_list(fields)), fields)
        return self._reduce_stats(stats), totals

    def _validation_metrics(self) -> dict[str, Any]:
        """The validation split's loss, token accuracy and task measure."""
        assert self.valid_data is not None and self.scorer is not None
        valid, totals = self.evaluate(self.valid_data)
        return {
            "valid_loss": valid.loss,
            "valid_mean_token_accuracy": valid.accuracy,
            "full_valid_loss": valid.loss,
            "full_valid_mean_token_accuracy": valid.accuracy,
            **self.scorer.metrics(totals),
        }

    # -- checkpoints --------------------------------------------------------------------------

    def _save_weights(self, path: Path) -> None:
        """The adapter (or whole model) and the tokenizer: each saved folder is servable."""
        save_weights(path, self.config, self.model, self.causal_lm, self.tokenizer)

    def _save_checkpoint(self, epoch: int, step: int, state: dict[str, Any]) -> Path:
        return save_checkpoint(
            self.output_dir,
            epoch,
            step,
            state,
            config=self.config,
            write_weights=self._save_weights,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
        )

    def _resume(self) -> dict[str, Any] | None:
        state = load_latest(
            self.output_dir,
            config=self.config,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            warn=self._warn,
        )
        if state is not None:
            self.emit(
                "message",
                f"Resumed from checkpoint epoch-{state['epoch']} (step {state['step']})",
                {"epoch": state["epoch"], "step": state["step"]},
            )
        return state

    # -- the run ------------------------------------------------------------------------------

    def _step_batches(self, epoch: int) -> Iterator[list[TokenizedExample]]:
        cfg = self.config
        examples = self.train_data.examples
        return epoch_batches(examples, seed=cfg.seed, epoch=epoch, batch_size=int(cfg.batch_size))

    def run(self) -> TrainingResult:
        progress = self._prepare()
        self._announce(progress.total_steps)
        if self.selecting and progress.baseline is None:
            progress.baseline = self._validation_metrics()
            self._announce_baseline(progress.baseline)
        self.model.train()
        stopped_after: int | None = None
        for epoch in range(progress.start_epoch, int(self.config.n_epochs) + 1):
            if self._stop_early(progress):  # a resumed run that had already stopped
                break
            epoch_stats = self._train_epoch(epoch, progress)
            metrics = self._epoch_metrics(progress.step, epoch_stats)
            self._end_epoch(epoch, progress, metrics)
            if epoch < int(self.config.n_epochs) and self._stop_early(progress):
                stopped_after = epoch
                break
        return self._finish(progress, stopped_after)

    @staticmethod
    def _epochs(progress: _Progress) -> list[dict[str, Any]]:
        """Each epoch's ``{"epoch", "metrics"}``, epoch 0 being the model before training."""
        return [{"epoch": 0, "metrics": progress.baseline or {}}, *progress.history]

    def _curve(self, progress: _Progress) -> list[Point]:
        """The validation score per epoch, epoch 0 being the model before training."""
        metric = self.measure.metric
        return [
            Point(int(r["epoch"]), r["metrics"].get(metric), r["metrics"].get("valid_loss"))
            for r in self._epochs(progress)
        ]

    def _stop_early(self, progress: _Progress) -> bool:
        if not self.selecting or not progress.history:
            return False
        return should_stop(self._curve(progress), self.config.early_stopping_patience)

    def _announce_baseline(self, metrics: dict[str, Any]) -> None:
        score = metrics.get(self.measure.metric)
        shown = f"{score:.1%}" if isinstance(score, float) else "-"
        self.emit(
            "message",
            f"Before training, on the {len(self.valid_data.examples) if self.valid_data else 0} "
            f"validation examples: {self.measure.describe()} {shown}",
            {"epoch": 0, "metrics": metrics, "measure": self.measure.to_json()},
        )

    def _prepare(self) -> _Progress:
        """Load the data and the student, build the optimizer and resume where a checkpoint is."""
        self._setup_runtime()
        self.emit("message", f"Loading {self.config.base_model} and tokenizing the data")
        self._load_data()
        self.check_stop()
        self._load_model()
        self.check_stop()
        cfg = self.config
        steps_per_epoch = math.ceil(len(self.train_data.examples) / int(cfg.batch_size))
        total_steps = steps_per_epoch * int(cfg.n_epochs)
        self._make_optimizer(total_steps)
        state = self._resume() or {}
        self.training_seconds = float(state.get("training_seconds", 0.0))
        return _Progress(
            total_steps=total_steps,
            step=int(state.get("step", 0)),
            start_epoch=int(state.get("epoch", 0)) + 1,
            trained_tokens=int(state.get("trained_tokens", 0)),
            history=list(state.get("checkpoints", [])),
            baseline=state.get("baseline"),
        )

    def _announce(self, total_steps: int) -> None:
        cfg = self.config
        n_examples = len(self.train_data.examples)
        prefix = self.shape.shared_prefix if self.use_packing else 0
        shared = f", a {prefix}-token shared prompt computed once per pass" if prefix else ""
        self.emit(
            "message",
            f"Training {n_examples} examples ({self.train_data.n_tokens} tokens) for "
            f"{cfg.n_epochs} epochs, {total_steps} steps on {self.device}"
            f"{f' x {self.parallel.world_size} processes' if self.parallel.enabled else ''}"
            f"{' in bf16' if self.use_bf16 else ''}"
            f"{', packed' if self.use_packing else ', padded'}{shared}",
            {
                "hyperparameters": cfg.hyperparameters(),
                "learning_rate": cfg.peak_learning_rate,
                "method": cfg.method,
                "trainable_parameters": self.student.n_trainable,
                "parameters": self.student.n_params,
                "device": self.device,
                "bf16": self.use_bf16,
                "packing": self.use_packing,
                "n_examples": n_examples,
                "n_tokens": self.train_data.n_tokens,
                "total_steps": total_steps,
                "devices": self.parallel.world_size,
                "shared_prefix_tokens": self.shape.shared_prefix,
                "measure": self.measure.to_json(),
            },
        )

    def _train_epoch(self, epoch: int, progress: _Progress) -> StepStats:
        """One epoch's optimizer steps, metrics every ``logging_steps`` and progress each step."""
        total_steps = progress.total_steps
        epoch_stats = StepStats()
        window = StepStats()
        window_start = time.perf_counter()
        for examples in self._step_batches(epoch):
            self._agree_stop()
            learning_rate = self.scheduler.get_last_lr()[0]  # the rate this step uses
            t0 = time.perf_counter()
            stats = self._train_step(examples)
            release_free_memory()
            seconds = time.perf_counter() - t0
            self.training_seconds += seconds
            self.step_timings.append((stats.tokens, seconds))
            progress.step += 1
            step = progress.step
            progress.trained_tokens += stats.tokens
            epoch_stats.add(stats)
            window.add(stats)
            last: dict[str, Any] = {
                "step": step,
                "total_steps": total_steps,
                "epoch": epoch,
                "train_loss": stats.loss,
                "train_mean_token_accuracy": stats.accuracy,
                "learning_rate": learning_rate,
            }
            if step % self.config.logging_steps == 0 or step == total_steps:
                elapsed = max(1e-9, time.perf_counter() - window_start)
                last["tokens_per_second"] = window.tokens / elapsed
                self.emit(
                    "metrics",
                    f"Step {step}/{total_steps}: training loss={stats.loss:.4f}",
                    dict(last),
                )
                window, window_start = StepStats(), time.perf_counter()
            report(self._progress, ProgressEvent("training", step, total_steps, info=dict(last)))
        return epoch_stats

    def _epoch_metrics(self, step: int, epoch_stats: StepStats) -> dict[str, Any]:
        """The epoch's training figures and, with a validation file, its validation figures."""
        metrics: dict[str, Any] = {
            "step": step,
            "train_loss": epoch_stats.loss,
            "train_mean_token_accuracy": epoch_stats.accuracy,
            "valid_loss": None,
            "valid_mean_token_accuracy": None,
        }
        if self.valid_data is not None:
            metrics.update(self._validation_metrics())
        return metrics

    def _end_epoch(self, epoch: int, progress: _Progress, metrics: dict[str, Any]) -> None:
        """Record the epoch in the history and write its checkpoint."""
        step = progress.step
        progress.history.append({"epoch": epoch, "step": step, "metrics": metrics})
        if not self.parallel.is_main:
            return  # rank 0 writes the checkpoint
        path = self._save_checkpoint(
            epoch,
            step,
            {
                "trained_tokens": progress.trained_tokens,
                "checkpoints": progress.history,
                "baseline": progress.baseline,
                "training_seconds": self.training_seconds,
            },
        )
        self.emit(
            "checkpoint",
            f"Checkpoint for epoch {epoch} (step {step})",
            {"epoch": epoch, "step": step, "path": str(path), "metrics": metrics},
        )

    def _finish(self, progress: _Progress, stopped_after: int | None) -> TrainingResult:
        trained_tokens, history = progress.trained_tokens, progress.history
        if not self.parallel.is_main:  # rank 0 writes the final folders
            return TrainingResult(
                trained_tokens=trained_tokens,
                adapter_path=self.output_dir / ADAPTER,
                merged_path=None,
                metrics={},
                hyperparameters=self.config.hyperparameters(),
                checkpoints=history,
            )
        last = int(history[-1]["epoch"]) if history else 0
        kept = self._select(progress, stopped_after) if self.selecting else last
        adapter = self._write_kept(kept, last)
        merged: Path | None = None
        if self.config.merge_adapter and self.config.method == "lora":
            self.emit("message", "Merging the adapter into the base model")
            merged = merge_adapter(self.source, adapter, self.output_dir, self.tokenizer)
        final: dict[str, Any] = next(
            (r["metrics"] for r in self._epochs(progress) if r["epoch"] == kept), {}
        )
        metrics = {
            **final,
            "epoch": kept,
            "training_seconds": self.training_seconds,
            "trained_tokens": trained_tokens,
        }
        write_training_record(adapter, self.config, metrics)
        self.emit("message", "Training finished", {"adapter_path": str(adapter)})
        return TrainingResult(
            trained_tokens=trained_tokens,
            adapter_path=adapter,
            merged_path=merged,
            metrics=metrics,
            hyperparameters=self.config.hyperparameters(),
            checkpoints=history,
        )

    def _select(self, progress: _Progress, stopped_after: int | None) -> int:
        """The best epoch on the validation split (0: the base model), announced with the
        curve."""
        curve = self._curve(progress)
        chosen = choose(curve)
        reason = explain(curve, chosen, self.measure, stopped_after=stopped_after)
        self.emit(
            "message",
            reason,
            {
                "selection": {
                    "measure": self.measure.to_json(),
                    "curve": [p.to_json() for p in curve],
                    "chosen_epoch": chosen.epoch,
                    "stopped_early_after": stopped_after,
                    "reason": reason,
                }
            },
            level="warn" if chosen.epoch == 0 else "info",
        )
        return chosen.epoch

    def _write_kept(self, epoch: int, last: int) -> Path:
        """``adapter/`` holding the weights of ``epoch`` (0: the base model); the live model
        holds those of the ``last`` epoch trained."""
        if epoch == 0:
            self._reset_to_base()
        elif epoch != last:
            source = checkpoint_dir(self.output_dir, epoch)
            return write_adapter(self.output_dir, lambda tmp: copy_weights(source, tmp))
        return write_adapter(self.output_dir, self._save_weights)

    def _reset_to_base(self) -> None:
        """Put the base model's weights back: LoRA's B matrices to zero (the adapter then adds
        nothing), or, for full fine-tuning, the base weights loaded again."""
        import torch

        with torch.no_grad():
            if self.config.method == "lora":
                for name, param in self.model.named_parameters():
                    if "lora_B" in name:
                        param.zero_()
                return
            base = weights.load_model(self.source, dtype="float32", device="cpu")
            self.causal_lm.load_state_dict(base.state_dict(), strict=False)
            del base

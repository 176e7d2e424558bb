"""``LocalRFTTrainer``: reinforcement fine-tuning (GRPO) of the local student, graders as rewards.

One optimizer step:

1. **Sample.** ``batch_size`` prompts, ``group_size`` answers each, written by the weights being
   trained through the serving engine (``rollouts.py``): batched decoding, the response format
   held token by token, the served chat template.
2. **Reward.** Each answer is graded by the job's grader with its row as ``item``
   (``rewards.py``: the evals' grader code).
3. **Advantage.** Group-relative: ``(reward - group mean) / (group std + 1e-4)``. A group whose
   answers all scored the same teaches nothing and weighs nothing; a step where every group is
   like that is reported, and ``constant_reward_patience`` such steps in a row end the run.
4. **Update.** The loss over every sampled token is ``-advantage x log p(token)`` (on-policy: one
   update per batch of samples, so the importance ratio is 1) plus ``kl_coef`` times the k3
   estimate of the KL divergence to the start model, ``exp(r - l) - (r - l) - 1`` with ``l`` and
   ``r`` the token's log-probabilities under the policy and the reference, averaged over the
   step's tokens. The reference is the start model without a second copy of it: the base with
   the LoRA adapter switched off, or, for a run that starts from a fine-tuned student, that
   student's adapter kept frozen beside the trained copy (``student.reference_weights``). The
   forward passes are those of the supervised trainer: the answers of one step packed into
   padding-free rows, the shared system prompt computed once per pass (``steps.make_batches``).

Before the first step, with ``focus: unsolved`` (the default), each prompt is sampled once with
the start model and the run keeps the prompts it gets wrong or answers unevenly, plus
``solved_share`` of those it already solves (so that it keeps what it knows): the compute goes
where there is something to learn ("auto" epochs and ``eval_interval`` then count the steps over
the prompts kept). The validation prompts (the validation file) are answered greedily before the
first step and every ``eval_interval`` steps; with ``checkpoint: best`` (the default) the run
ends on the step that scored best on them, the start model when no step beat it (the best
step's adapter, a few MB, waits in ``best/``), and says so with the curve. Each epoch ends with a
checkpoint that a restarted run resumes from. Events: ``metrics`` per step with ``reward_mean``,
``reward_std``, ``pass_rate`` per grader, ``kl``, ``constant_groups`` and timings; ``valid_reward_mean`` and ``valid_pass_rate`` at each
evaluation.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery import weights
from distillery.errors import DistilleryError
from distillery.memory import release_free_memory
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.serving.constrained import parse_response_format
from distillery.training.local.checkpoints import ADAPTER
from distillery.training.local.data import IGNORE_INDEX, TokenizedExample
from distillery.training.local.outputs import write_adapter, write_training_record
from distillery.training.local.rewards import EnvironmentJudge, Reward, Rewards
from distillery.training.local.rft_config import LocalRFTConfig
from distillery.training.local.rft_data import Prompt, load_prompts
from distillery.training.local.rollouts import Group, Rollouts
from distillery.training.local.steps import make_batches, target_logprobs
from distillery.training.local.student import reference_weights
from distillery.training.local.trainer import (
    EmitFn,
    LocalSFTTrainer,
    TrainingCancelled,
    TrainingResult,
)

ADVANTAGE_EPS = 1e-4
BEST_DIR = "best"  # the best step's trainable weights while the run goes on
CONSTANT_EPS = 1e-6


@dataclass
class _Run:
    """Where the run stands: saved in each checkpoint."""

    total_steps: int
    prompts: list[int]  # indices of the training prompts this run trains on (after focus)
    step: int = 0
    start_epoch: int = 1
    constant_steps: int = 0
    trained_tokens: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    stopped: str | None = None
    last: dict[str, Any] = field(default_factory=dict)  # the latest step's rewards
    # the validation curve (step, valid_reward_mean), step 0 being the start model, and the best
    # step on it, whose trainable weights are kept in ``best/`` until the run ends
    curve: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None


@dataclass
class _Scored:
    groups: list[Group]
    rewards: list[list[Reward]]

    def values(self) -> list[list[float]]:
        return [[r.value for r in group] for group in self.rewards]

    def summary(self, prefix: str = "") -> dict[str, Any]:
        flat = [r for group in self.rewards for r in group]
        values = [r.value for r in flat]
        names = sorted({name for r in flat for name in r.passed})
        return {
            f"{prefix}reward_mean": statistics.fmean(values) if values else None,
            f"{prefix}reward_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            f"{prefix}pass_rate": {
                name: statistics.fmean(r.passed.get(name, False) for r in flat) for name in names
            },
            f"{prefix}grading_errors": sum(1 for r in flat if r.error),
        }


def advantages(rewards: Sequence[float]) -> list[float]:
    """Group-relative advantages: each reward against its group's mean, in group std units."""
    mean = statistics.fmean(rewards)
    std = statistics.pstdev(rewards)
    if std < CONSTANT_EPS:
        return [0.0] * len(rewards)
    return [(r - mean) / (std + ADVANTAGE_EPS) for r in rewards]


def focus_prompts(
    unsolved: list[int],
    solved: list[int],
    *,
    solved_share: float,
    max_prompts: int | None,
    rng: random.Random,
) -> tuple[list[int], list[int]]:
    """The unsolved and solved prompts a run trains on: every unsolved one and ``solved_share``
    of the solved ones; under a ``max_prompts`` cap the unsolved come first (the solved keep
    ``solved_share`` of the room, and what the unsolved leave)."""
    kept_solved = rng.sample(solved, round(len(solved) * solved_share)) if solved else []
    if max_prompts is None or len(unsolved) + len(kept_solved) <= max_prompts:
        return list(unsolved), kept_solved
    unsolved = rng.sample(
        unsolved, min(len(unsolved), max_prompts - round(max_prompts * solved_share))
    )
    return unsolved, rng.sample(kept_solved, min(len(kept_solved), max_prompts - len(unsolved)))


class LocalRFTTrainer(LocalSFTTrainer):
    """GRPO on the prompts of a reinforcement training file, writing into ``output_dir``."""

    config: LocalRFTConfig

    def __init__(
        self,
        config: LocalRFTConfig,
        training_file: str | Path,
        validation_file: str | Path | None,
        output_dir: str | Path,
        *,
        emit: EmitFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(
            config,
            training_file,
            validation_file,
            output_dir,
            emit=emit,
            should_stop=should_stop,
            progress=progress,
        )
        self.response_format = parse_response_format(config.response_format)
        self.rollouts: Rollouts | None = None
        self.rewards: Rewards | None = None

    # -- setup --------------------------------------------------------------------------------

    def _load_data(self) -> None:
        cfg = self.config
        self.source = weights.resolve_source(cfg.base_model, cfg.base_model_path)
        self.tokenizer = weights.load_tokenizer(self.source, chat_template=cfg.chat_template)
        self.prompts = load_prompts(self.training_file)
        self.valid_prompts = (
            load_prompts(self.validation_file, what="validation file", param="validation_file")
            if self.validation_file is not None
            else []
        )
        self.requested = cfg  # "auto" resolves again for the prompts the focus pass keeps
        self.config = cfg.resolve_rft(len(self.prompts))
        self.rewards = Rewards(self.config.grader, judge=EnvironmentJudge.from_environment())

    @property
    def selecting(self) -> bool:
        return False

    def _load_model(self) -> None:
        super()._load_model()
        self.rollouts = Rollouts(self.student, self.tokenizer, self.config.base_model)

    # -- sampling and rewards -----------------------------------------------------------------

    def _sample(
        self, prompts: Sequence[Prompt], *, n: int, temperature: float, seed: int
    ) -> _Scored:
        assert self.rollouts is not None and self.rewards is not None
        try:
            groups = self.rollouts.sample(
                [p.messages for p in prompts],
                n=n,
                temperature=temperature,
                max_tokens=self.config.max_completion_tokens,
                response_format=self.response_format,
                seed=seed,
            )
        except DistilleryError:
            self.check_stop()  # a stop requested mid-decoding fails the engine's batch
            raise
        self.check_stop()
        release_free_memory()  # the decoding batches' buffers (before an update's)
        items = [p.item for p, g in zip(prompts, groups, strict=True) for _ in g.samples]
        texts = [s.text for g in groups for s in g.samples]
        flat = self.rewards.score(items, texts)
        rewards = [flat[i * n : (i + 1) * n] for i in range(len(groups))]
        return _Scored(groups, rewards)

    def _focus(self) -> tuple[list[int], dict[str, Any]]:
        """The prompts to train on, and what the start model scored on them."""
        cfg = self.config
        every = list(range(len(self.prompts)))
        if cfg.focus == "all":
            return self._capped(every), {}
        n = cfg.focus_samples
        self.emit(
            "message",
            f"Sampling {n} answer(s) to each of the {len(every)} prompts with the start model, "
            "to train where it is wrong or unstable",
        )
        scored = self._sample(
            self.prompts, n=n, temperature=cfg.temperature if n > 1 else 0.0, seed=cfg.seed
        )
        unsolved: list[int] = []
        solved: list[int] = []
        for i, group in enumerate(scored.rewards):
            all_pass = all(r.passed and all(r.passed.values()) for r in group)
            spread = max(r.value for r in group) - min(r.value for r in group)
            (solved if all_pass and spread < CONSTANT_EPS else unsolved).append(i)
        n_unsolved = len(unsolved)
        unsolved, kept_solved = focus_prompts(
            unsolved,
            solved,
            solved_share=cfg.solved_share,
            max_prompts=cfg.max_prompts,
            rng=random.Random(cfg.seed),
        )
        chosen = sorted(unsolved + kept_solved)
        if not chosen:  # everything solved: keep all, the run still guards what it knows
            chosen = self._capped(every)
        baseline = {**scored.summary("train_"), "solved": len(solved), "unsolved": n_unsolved}
        self.emit(
            "message",
            f"Training on {len(chosen)} of {len(every)} prompts: {len(unsolved)} of the "
            f"{n_unsolved} the start model gets wrong or answers unevenly, {len(kept_solved)} of "
            f"the {len(solved)} it solves",
            {
                "focus": {
                    **baseline,
                    "kept_unsolved": len(unsolved),
                    "kept_solved": len(kept_solved),
                    "prompts": len(chosen),
                }
            },
        )
        return chosen, baseline

    def _capped(self, indices: list[int]) -> list[int]:
        """``indices``, or ``max_prompts`` of them drawn at random."""
        cap = self.config.max_prompts
        if cap is None or cap >= len(indices):
            return indices
        return sorted(random.Random(self.config.seed).sample(indices, cap))

    def _evaluate(self, step: int) -> dict[str, Any]:
        """Rewards on the validation prompts (greedy with one sample, as served)."""
        if not self.valid_prompts:
            return {}
        cfg = self.config
        n = int(cfg.eval_samples)
        scored = self._sample(
            self.valid_prompts,
            n=n,
            temperature=0.0 if n == 1 else cfg.temperature,
            seed=cfg.seed + step,
        )
        return scored.summary("valid_")

    # -- the update ---------------------------------------------------------------------------

    def _examples(self, scored: _Scored) -> tuple[list[TokenizedExample], list[float]]:
        """Training rows of the samples that carry an advantage, and those advantages."""
        assert self.rollouts is not None
        end = self.rollouts.end_of_turn
        examples: list[TokenizedExample] = []
        weights_: list[float] = []
        for group, rewards in zip(scored.groups, scored.rewards, strict=True):
            for sample, advantage in zip(
                group.samples, advantages([r.value for r in rewards]), strict=True
            ):
                if advantage == 0.0:
                    continue
                answer = list(sample.token_ids)
                if sample.finish_reason == "stop" and end is not None:
                    answer.append(end)
                if not answer:
                    continue
                ids = group.prompt_ids + answer
                labels = [IGNORE_INDEX] * len(group.prompt_ids) + answer
                examples.append(TokenizedExample(ids, labels, sample.text, len(answer)))
                weights_.append(advantage)
        return examples, weights_

    def _update(self, examples: list[TokenizedExample], advantage: list[float]) -> dict[str, float]:
        """One optimizer step on the sampled answers; returns the loss and the KL."""
        import torch

        cfg = self.config
        pad_token_id = 0 if self.use_packing else int(self.tokenizer.pad_token_id or 0)
        batches = make_batches(
            examples,
            cfg.gradient_accumulation_steps,
            config=cfg,
            use_packing=self.use_packing,
            pad_token_id=pad_token_id,
        )
        per_token = torch.tensor(
            [
                a
                for ex, a in zip(examples, advantage, strict=True)
                for _ in range(ex.n_target_tokens)
            ]
        )
        n_tokens = max(1, int(per_token.numel()))
        offset = 0
        loss_sum = kl_sum = 0.0
        for batch in batches:
            self.check_stop()
            count = int((batch.targets != IGNORE_INDEX).sum())
            adv = per_token[offset : offset + count].to(self.device)
            offset += count
            if cfg.kl_coef > 0:
                with torch.no_grad(), reference_weights(self.student):
                    ref = target_logprobs(
                        self.student, batch, device=self.device, autocast=self._autocast()
                    )
            logp = target_logprobs(
                self.student, batch, device=self.device, autocast=self._autocast()
            )
            loss = -(adv * logp).sum()
            if cfg.kl_coef > 0:
                delta = ref - logp
                kl = torch.exp(delta) - delta - 1.0
                loss = loss + cfg.kl_coef * kl.sum()
                kl_sum += float(kl.detach().sum())
            (loss / n_tokens).backward()  # type: ignore[no-untyped-call]
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.student.trainable, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        assert self.rollouts is not None
        self.rollouts.weights_changed()
        return {"loss": loss_sum / n_tokens, "kl": kl_sum / n_tokens, "tokens": n_tokens}

    # -- the run ------------------------------------------------------------------------------

    def _prepare_rft(self) -> _Run:
        self._setup_runtime()
        self.emit("message", f"Loading {self.config.base_model} and reading the prompts")
        self._load_data()
        self.check_stop()
        self._load_model()
        self.check_stop()
        cfg = self.config
        state = self._resume_state()
        if state is not None:
            prompts = [int(i) for i in state["prompts"]]
            baseline = state.get("baseline")
        else:
            prompts, baseline = self._focus()
        # "auto" epochs and eval_interval count the steps over the prompts trained on
        self.config = cfg = self.requested.resolve_rft(len(prompts))
        steps_per_epoch = math.ceil(len(prompts) / int(cfg.batch_size))
        total = steps_per_epoch * int(cfg.n_epochs)
        self._make_optimizer(total)
        if state is not None:
            state = self._resume() or state
        state = state or {}
        self.training_seconds = float(state.get("training_seconds", 0.0))
        run = _Run(
            total_steps=total,
            prompts=prompts,
            step=int(state.get("step", 0)),
            start_epoch=int(state.get("epoch", 0)) + 1,
            constant_steps=int(state.get("constant_steps", 0)),
            trained_tokens=int(state.get("trained_tokens", 0)),
            history=list(state.get("checkpoints", [])),
            baseline=baseline,
            stopped=state.get("stopped"),
            curve=[(int(a), float(b)) for a, b in state.get("curve", [])],
            best_step=state.get("best_step"),
        )
        self._check_best_after_resume(run)
        return run

    def _resume_state(self) -> dict[str, Any] | None:
        """The latest checkpoint's state without loading it (the prompts it trained on)."""
        from distillery.training.local.checkpoints import (
            CHECKPOINTS,
            STATE_FILE,
            checkpoint_epochs,
        )

        epochs = checkpoint_epochs(self.output_dir)
        if not epochs:
            return None
        import torch

        path = self.output_dir / CHECKPOINTS / f"epoch-{epochs[-1]}" / STATE_FILE
        state: dict[str, Any] = torch.load(path, weights_only=False)
        return state if "prompts" in state else None

    def _announce_rft(self, run: _Run) -> None:
        cfg = self.config
        start = (
            f"the fine-tuned adapter {cfg.start_adapter}" if cfg.start_adapter else cfg.base_model
        )
        self.emit(
            "message",
            f"Reinforcement fine-tuning from {start}: {len(run.prompts)} prompts, "
            f"{cfg.samples_per_prompt} samples each, {cfg.batch_size} prompts a step, "
            f"{run.total_steps} steps on {self.device}",
            {
                "hyperparameters": {
                    k: v
                    for k, v in cfg.hyperparameters().items()
                    if k in ("n_epochs", "batch_size", "learning_rate_multiplier")
                },
                "reinforcement": cfg.hyperparameters(),
                "learning_rate": cfg.peak_learning_rate,
                "group_size": cfg.samples_per_prompt,
                "kl_coef": cfg.kl_coef,
                "total_steps": run.total_steps,
                "n_prompts": len(run.prompts),
                "trainable_parameters": self.student.n_trainable,
            },
        )

    def run(self) -> TrainingResult:
        try:
            return self._run()
        finally:
            if self.rollouts is not None:
                self.rollouts.close()
            if self.rewards is not None:
                self.rewards.close()

    def _run(self) -> TrainingResult:
        run = self._prepare_rft()
        self._announce_rft(run)
        if run.baseline is None or "valid_reward_mean" not in run.baseline:
            run.baseline = {**(run.baseline or {}), **self._evaluate(0)}
            if "valid_reward_mean" in run.baseline:
                self.emit(
                    "metrics",
                    f"Before training: validation reward {run.baseline['valid_reward_mean']:.3f}",
                    {"step": 0, "total_steps": run.total_steps, **run.baseline},
                )
        start = run.baseline.get("valid_reward_mean") if run.baseline else None
        if run.step == 0 and not run.curve and start is not None:
            self._track(run, 0, float(start))
        for epoch in range(run.start_epoch, int(self.config.n_epochs) + 1):
            if run.stopped:
                break
            self._epoch(epoch, run)
            self._checkpoint(epoch, run)
        return self._finish_rft(run)

    def _epoch(self, epoch: int, run: _Run) -> None:
        cfg = self.config
        rng = random.Random(cfg.seed * 1_000_003 + epoch)
        order = list(run.prompts)
        rng.shuffle(order)
        for start in range(0, len(order), int(cfg.batch_size)):
            self.check_stop()
            chosen = [self.prompts[i] for i in order[start : start + int(cfg.batch_size)]]
            t0 = time.perf_counter()
            learning_rate = self.scheduler.get_last_lr()[0]
            scored = self._sample(
                chosen,
                n=cfg.samples_per_prompt,
                temperature=cfg.temperature,
                seed=cfg.seed + run.step + 1,
            )
            sampled_s = time.perf_counter() - t0
            examples, weights_ = self._examples(scored)
            constant = sum(1 for g in scored.values() if max(g) - min(g) < CONSTANT_EPS)
            update: dict[str, float] = {}
            if examples:
                update = self._update(examples, weights_)
                release_free_memory()
                run.constant_steps = 0
            else:
                run.constant_steps += 1
                self.scheduler.step()  # the step counts: the schedule stays on its course
            seconds = time.perf_counter() - t0
            self.training_seconds += seconds
            run.step += 1
            run.trained_tokens += int(update.get("tokens", 0))
            completion = [len(s.token_ids) for g in scored.groups for s in g.samples]
            data: dict[str, Any] = {
                "step": run.step,
                "total_steps": run.total_steps,
                "epoch": epoch,
                **scored.summary(),
                "kl": update.get("kl"),
                "train_loss": update.get("loss"),
                "constant_groups": constant,
                "groups": len(scored.groups),
                "completion_tokens_mean": statistics.fmean(completion) if completion else 0.0,
                "learning_rate": learning_rate,
                "sampling_seconds": sampled_s,
                "step_seconds": seconds,
            }
            if run.step % int(cfg.eval_interval) == 0 or run.step == run.total_steps:
                data.update(self._evaluate(run.step))
                if data.get("valid_reward_mean") is not None:
                    self._track(run, run.step, float(data["valid_reward_mean"]))
            run.last = {
                k: data[k]
                for k in (
                    "reward_mean",
                    "reward_std",
                    "pass_rate",
                    "kl",
                    "valid_reward_mean",
                    "valid_pass_rate",
                )
                if data.get(k) is not None
            }
            reward = data["reward_mean"]
            valid = data.get("valid_reward_mean")
            shown = f", validation reward {valid:.3f}" if isinstance(valid, float) else ""
            self.emit(
                "metrics", f"Step {run.step}/{run.total_steps}: reward {reward:.3f}{shown}", data
            )
            if data["grading_errors"]:
                self.emit(
                    "message",
                    f"Step {run.step}: {data['grading_errors']} answer(s) could not be graded "
                    f"(counted as reward 0): {next(r.error for g in scored.rewards for r in g if r.error)}",
                    level="warn",
                )
            if not examples:
                self.emit(
                    "message",
                    f"Step {run.step}: the rewards were constant within every group: nothing to "
                    f"learn from ({run.constant_steps} such step(s) in a row)",
                    {"step": run.step, "constant_steps": run.constant_steps},
                    level="warn",
                )
                if run.constant_steps >= cfg.constant_reward_patience:
                    run.stopped = (
                        f"the rewards were constant within every group for {run.constant_steps} "
                        "steps in a row"
                    )
                    self.emit("message", f"Ending the run early: {run.stopped}", level="warn")
                    return
            report(self._progress, ProgressEvent("training", run.step, run.total_steps, info=data))

    def _checkpoint(self, epoch: int, run: _Run) -> None:
        metrics = {"step": run.step, **run.last}
        run.history.append({"epoch": epoch, "step": run.step, "metrics": metrics})
        path = self._save_checkpoint(
            epoch,
            run.step,
            {
                "trained_tokens": run.trained_tokens,
                "checkpoints": run.history,
                "baseline": run.baseline,
                "training_seconds": self.training_seconds,
                "prompts": run.prompts,
                "constant_steps": run.constant_steps,
                "stopped": run.stopped,
                "curve": run.curve,
                "best_step": run.best_step,
            },
        )
        self.emit(
            "checkpoint",
            f"Checkpoint for epoch {epoch} (step {run.step})",
            {"epoch": epoch, "step": run.step, "path": str(path), "metrics": metrics},
        )

    # -- the best step on the validation prompts -------------------------------------------------

    @property
    def choosing_best(self) -> bool:
        """Whether the run keeps its best step on the validation prompts (else its last)."""
        return bool(self.valid_prompts) and self.config.checkpoint == "best"

    @property
    def _best_file(self) -> Path:
        return self.output_dir / BEST_DIR / "trainable.pt"

    def _track(self, run: _Run, step: int, score: float) -> None:
        """Add ``score`` to the validation curve; a new best keeps its trainable weights (the
        adapter's few MB) in ``best/``, so that the run can end on them."""
        import torch

        best = dict(run.curve).get(run.best_step) if run.best_step is not None else None
        run.curve.append((step, score))
        if not self.choosing_best or (best is not None and score <= best + CONSTANT_EPS):
            return
        trainable = {
            name: p.detach().to("cpu", copy=True)
            for name, p in self.student.model.named_parameters()
            if p.requires_grad
        }
        path = self._best_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"step": step, "weights": trainable}, tmp)
        tmp.replace(path)
        run.best_step = step

    def _saved_best_step(self) -> int | None:
        import torch

        if not self._best_file.is_file():
            return None
        return int(torch.load(self._best_file, weights_only=True)["step"])

    def _check_best_after_resume(self, run: _Run) -> None:
        """A best found after the checkpoint the run resumed from replaced the checkpoint's best
        on disk: the choice starts again from the resumed step."""
        if run.best_step is None or self._saved_best_step() == run.best_step:
            return
        self.emit(
            "message",
            f"The weights of step {run.best_step} (the best before the restart) were replaced "
            "after the last checkpoint; the best step is chosen again from here",
            level="warn",
        )
        run.best_step = None

    def _keep_best(self, run: _Run) -> int:
        """Put the best step's weights back when it is not the last; returns the step kept."""
        import torch

        if not self.choosing_best:
            return run.step
        if run.curve and run.curve[-1][0] != run.step:  # ended between two evaluations
            self._track(run, run.step, float(self._evaluate(run.step)["valid_reward_mean"]))
        if run.best_step is None:
            return run.step
        chosen = run.best_step
        scores = dict(run.curve)
        curve = ", ".join(f"step {s}: {v:.3f}" for s, v in run.curve)
        if chosen == run.step:
            reason = f"Keeping the last step ({run.step}): the best on the validation prompts"
        else:
            saved = torch.load(self._best_file, weights_only=True)
            params = dict(self.student.model.named_parameters())
            with torch.no_grad():
                for name, value in saved["weights"].items():
                    params[name].copy_(value)
            what = "the start model" if chosen == 0 else f"step {chosen}"
            reason = (
                f"Keeping {what} (validation reward {scores[chosen]:.3f}): no later step scored "
                f"higher on the validation prompts (last step {run.step}: "
                f"{scores.get(run.step, float('nan')):.3f})"
            )
        self.emit(
            "message",
            f"{reason}. Curve: {curve}",
            {
                "selection": {
                    "measure": "valid_reward_mean",
                    "curve": [{"step": s, "valid_reward_mean": v} for s, v in run.curve],
                    "chosen_step": chosen,
                    "reason": reason,
                }
            },
            level="warn" if chosen == 0 else "info",
        )
        return chosen

    def _finish_rft(self, run: _Run) -> TrainingResult:
        kept = self._keep_best(run)
        adapter = write_adapter(self.output_dir, self._save_weights)
        metrics = {
            "step": run.step,
            "kept_step": kept,
            "training_seconds": self.training_seconds,
            "trained_tokens": run.trained_tokens,
            "baseline": run.baseline,
            "stopped_early": run.stopped,
        }
        write_training_record(adapter, self.config, metrics)
        self.emit("message", "Training finished", {"adapter_path": str(adapter)})
        return TrainingResult(
            trained_tokens=run.trained_tokens,
            adapter_path=self.output_dir / ADAPTER,
            merged_path=None,
            metrics=metrics,
            hyperparameters={
                k: v
                for k, v in self.config.hyperparameters().items()
                if k in ("n_epochs", "batch_size", "learning_rate_multiplier")
            },
            checkpoints=run.history,
        )


__all__ = ["LocalRFTTrainer", "TrainingCancelled", "advantages"]

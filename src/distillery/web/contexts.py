"""One frozen dataclass per page: exactly what its template may use (datasette style).

Every template receives ``layout`` (a ``Layout``) and ``page`` (the page's context below).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distillery.wire.route_modes import RouteMode

# --- layout and small pieces ---------------------------------------------------------------------


@dataclass(frozen=True)
class NavItem:
    key: str
    label: str
    href: str
    active: bool


@dataclass(frozen=True)
class Layout:
    title: str
    nav: list[NavItem]
    auth: bool  # signed in (auth on and a session cookie): show "Sign out"
    flash: str | None  # a one-time message after a form post
    path: str
    refresh: int | None = None  # seconds: reload a page that shows work in progress


@dataclass(frozen=True)
class Action:
    """A form action; disabled (with the reason as its title) when its service is missing."""

    name: str
    label: str
    enabled: bool
    reason: str | None = None


@dataclass(frozen=True)
class Option:
    value: str
    label: str


@dataclass(frozen=True)
class Message:
    """One chat message as shown: ``text`` is plain text (escaped by the template)."""

    role: str
    text: str
    name: str | None = None
    lang: str | None = None  # "ja" for Japanese text, so the browser picks Japanese glyphs
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SpendLine:
    key: str
    model: str | None
    requests: int
    tokens: int
    cost_usd: float
    extra: str | None = None


@dataclass(frozen=True)
class ErrorPage:
    status: int
    title: str
    message: str


@dataclass(frozen=True)
class LoginPage:
    next: str
    error: str | None


# --- overview ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    label: str
    value: int
    href: str


@dataclass(frozen=True)
class ActivityLine:
    kind: str
    id: str
    label: str
    status: str | None
    created_at: int
    href: str


@dataclass(frozen=True)
class OverviewPage:
    stats: list[Stat]
    spend: list[SpendLine]
    total_spend: float
    recent: list[ActivityLine]


# --- completions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompletionFilters:
    model: str
    meta: list[str]  # "key=value" strings, as typed
    since: str  # YYYY-MM-DD
    until: str
    q: str
    status: str
    limit: int

    def query(self) -> list[tuple[str, str]]:
        pairs = [("model", self.model), ("since", self.since), ("until", self.until)]
        pairs += [("q", self.q), ("status", self.status)]
        pairs += [("meta", m) for m in self.meta if m]
        if self.limit != 50:
            pairs.append(("limit", str(self.limit)))
        return [(k, v) for k, v in pairs if v]


@dataclass(frozen=True)
class CompletionLine:
    id: str
    created_at: int
    model: str
    status: str
    prompt: str
    output: str
    metadata: dict[str, str]
    tokens: int | None
    cost_usd: float | None
    latency_ms: float | None


@dataclass(frozen=True)
class CompletionsPage:
    filters: CompletionFilters
    rows: list[CompletionLine]
    models: list[str]
    prev_url: str | None
    next_url: str | None
    return_to: str
    actions: list[Action]
    evals: list[Option]
    datasets: list[Option]

    def action(self, name: str) -> Action:
        return next(a for a in self.actions if a.name == name)


@dataclass(frozen=True)
class CompletionDetailPage:
    id: str
    created_at: int
    model: str
    provider: str
    status: str
    stream: bool
    messages: list[Message]
    outputs: list[Message]
    finish_reasons: list[str]
    metadata: dict[str, str]
    params: dict[str, Any]
    usage: dict[str, Any]
    latency_ms: float | None
    cost_usd: float | None
    error: dict[str, Any] | None
    request: dict[str, Any]
    response: dict[str, Any] | None
    requested_model: str | None = None  # a route answered with another model
    route_id: str | None = None


# --- models and costs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModelLine:
    id: str
    owned_by: str
    provider: str
    kind: str
    price: str


@dataclass(frozen=True)
class FineTunedModelLine:
    id: str
    base_model: str
    provider: str
    created_at: int
    job_id: str | None
    adapter_path: str | None


@dataclass(frozen=True)
class ModelsPage:
    base: list[BaseModelLine]
    fine_tuned: list[FineTunedModelLine]


@dataclass(frozen=True)
class SavingsLine:
    teacher_model: str
    student_model: str
    teacher_cost_per_1k: float
    student_cost_per_1k: float
    daily_saving: float
    training_cost: float
    payback_days: float | None


@dataclass(frozen=True)
class CandidateLine:
    prompt: str
    model: str
    requests: int
    daily_spend: float
    enough_examples: bool


@dataclass(frozen=True)
class CostsPage:
    since: str
    until: str
    group_key: str
    total: float
    by_model: list[SpendLine]
    by_group: list[SpendLine]
    candidates: list[CandidateLine]
    savings: list[SavingsLine]
    chart: str
    routes: list[dict[str, Any]] = field(default_factory=list)  # costs_report()["routes"]
    distillations: list[dict[str, Any]] = field(default_factory=list)  # the newest ones
    default_student: str = ""  # what the Distil button trains unless another is typed in


@dataclass(frozen=True)
class DistillationPage:
    distillation: dict[str, Any]  # DistillationsService.to_object
    report: dict[str, Any] | None  # DistillReport.to_json, once it succeeded
    can_cancel: bool


# --- annotations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueLine:
    id: str
    name: str
    created_at: int
    priority: str
    source: str
    counts: dict[str, int]

    @property
    def done(self) -> int:
        return self.counts.get("accepted", 0) + self.counts.get("skipped", 0)


@dataclass(frozen=True)
class AnnotationsPage:
    queues: list[QueueLine]
    next_url: str | None


@dataclass(frozen=True)
class ItemLine:
    id: str
    completion_id: str
    status: str
    claimed_by: str | None
    rating: int | None
    corrected: bool
    updated_at: int


@dataclass(frozen=True)
class QueuePage:
    queue: QueueLine
    reviewer: str
    items: list[ItemLine]
    status: str
    next_url: str | None


@dataclass(frozen=True)
class ItemPage:
    queue: QueueLine
    item_id: str
    completion_id: str
    status: str
    claimed_by: str | None
    version: int
    model: str | None
    messages: list[Message]
    original: str
    corrected: str  # what the editor starts with: the correction, else the original
    rating: int | None
    tags: str
    comment: str
    reviewer: str
    conflict: str | None  # a 409: someone else changed the item


# --- datasets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetLine:
    id: str
    name: str
    created_at: int
    description: str | None
    latest_version: int | None


@dataclass(frozen=True)
class DatasetsPage:
    datasets: list[DatasetLine]
    next_url: str | None


@dataclass(frozen=True)
class SplitLine:
    name: str
    examples: int
    tokens: int
    corrected: int
    origins: dict[str, int] = field(default_factory=dict)  # captured, synthetic... -> rows


@dataclass(frozen=True)
class DuplicateLine:
    completion_id: str | None
    duplicate_of: str | None
    kind: str
    similarity: float | None


@dataclass(frozen=True)
class VersionLine:
    version: int
    id: str
    created_at: int
    examples: int
    tokens: int
    selected: int | None


@dataclass(frozen=True)
class ExampleLine:
    split: str
    completion_id: str | None
    corrected: bool
    tokens: int
    messages: list[Message]
    origin: str = "captured"  # captured, imported, synthetic, relabel


@dataclass(frozen=True)
class SynthesisForm:
    """The dataset page's "Synthesize" form, as last submitted (or its defaults)."""

    teacher: str = ""
    description: str = ""
    n: str = "100"
    languages: list[str] = field(default_factory=list)  # none: the seeds' languages
    labels: str = ""  # comma separated; empty: the seeds' labels
    max_usd: str = ""
    max_calls: str = ""
    inputs_per_call: str = "10"
    acknowledge_terms: bool = False


@dataclass(frozen=True)
class SynthesisEstimate:
    """A dry run of the form: what the synthesis would cost."""

    teacher: str
    seed_version: int | None
    requested: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    usd: float | None  # None: the teacher has no price
    seconds: float | None  # None: no latency recorded for the teacher yet
    cells: int
    labels: list[str]
    languages: list[str]
    label_field: str | None
    within_caps: bool
    warnings: list[str]


@dataclass(frozen=True)
class SynthesisCellLine:
    label: str | None
    topic: str | None
    language: str
    target: int
    accepted: int


@dataclass(frozen=True)
class RejectedLine:
    """One rejected synthetic input (or a generation call that gave none: ``raw``)."""

    reason: str
    label: str | None
    topic: str | None
    language: str | None
    text: str  # the input, or the teacher's raw answer
    raw: bool  # ``text`` is a raw answer, not an input
    detail: str | None
    output: str | None  # the teacher's answer to the input, when it was answered
    lang: str | None  # "ja" for Japanese text
    detail_lang: str | None = None  # "ja" when the detail or the answer is Japanese


@dataclass(frozen=True)
class SynthesisReport:
    """``stats.synthesis`` of a version: the curation report of the synthesis that made it."""

    id: str
    teacher: str
    requested: int
    accepted: int
    rejected: int
    generated: int
    rounds: int
    complete: bool
    stopped: str | None  # max_calls, max_usd, max_rounds
    stopped_text: str
    spent_calls: int
    spent_prompt_tokens: int
    spent_completion_tokens: int
    spent_usd: float | None
    estimate_calls: int | None
    estimate_usd: float | None
    reasons: list[tuple[str, int]]
    cells: list[SynthesisCellLine]
    warnings: list[str]
    rejected_items: list[RejectedLine]  # the first REJECTED_SHOWN
    rejected_total: int


@dataclass(frozen=True)
class DatasetPage:
    dataset: DatasetLine
    versions: list[VersionLine]
    version: int | None
    version_id: str | None
    spec: dict[str, Any]
    splits: list[SplitLine]
    examples: int
    tokens: int
    tokenizer: str | None
    corrected: int
    invalid: int
    cost: dict[str, Any]
    duplicates_mode: str | None
    duplicates_found: int
    duplicates_removed: int
    duplicates: list[DuplicateLine]
    warnings: list[str]
    sample: list[ExampleLine]
    sample_next_url: str | None = None
    origin_kinds: list[str] = field(default_factory=list)  # the splits' origin columns
    synthesis: SynthesisReport | None = None  # this version was made by a synthesis
    models: list[str] = field(default_factory=list)  # served models: the teacher's choices
    synth_form: SynthesisForm = field(default_factory=SynthesisForm)
    synth_estimate: SynthesisEstimate | None = None
    synth_error: str | None = None


# --- evals ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLine:
    id: str
    eval_id: str
    name: str
    model: str
    status: str
    created_at: int
    total: int
    passed: int
    failed: int
    errored: int

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.total if self.total else None


@dataclass(frozen=True)
class EvalLine:
    id: str
    name: str
    created_at: int
    criteria: list[str]
    runs: list[RunLine]


@dataclass(frozen=True)
class EvalsPage:
    evals: list[EvalLine]
    next_url: str | None


@dataclass(frozen=True)
class CriterionLine:
    name: str
    passed: int
    failed: int
    pass_rate: float | None
    mean_score: float | None


@dataclass(frozen=True)
class GradeLine:
    name: str
    passed: bool | None
    score: float | None
    reason: str


@dataclass(frozen=True)
class OutputItemLine:
    id: str
    index: int
    status: str
    completion_id: str | None
    input: str
    output: str
    grades: list[GradeLine]


@dataclass(frozen=True)
class RunPage:
    run: RunLine
    eval_name: str
    data_source: dict[str, Any]
    error: str | None
    criteria: list[CriterionLine]
    failing: list[OutputItemLine]
    failing_next_url: str | None
    usage: list[dict[str, Any]]
    chart: str
    compare_with: list[RunLine]


@dataclass(frozen=True)
class CompareCell:
    pass_rate: float | None
    mean_score: float | None
    percent_of_baseline: float | None
    ci: list[float] | None


@dataclass(frozen=True)
class CompareRow:
    name: str
    cells: list[CompareCell]


@dataclass(frozen=True)
class CompareRun:
    id: str
    eval_id: str
    name: str
    model: str
    status: str
    baseline: bool
    agreement: float | None
    matched_items: int


@dataclass(frozen=True)
class FlipLine:
    run_id: str
    direction: str  # pass_to_fail | fail_to_pass
    key: str
    criteria: list[str]


@dataclass(frozen=True)
class ComparePage:
    run_ids: str
    baseline: str
    runs: list[CompareRun]
    rows: list[CompareRow]
    chart: str
    flips: list[FlipLine]


# --- fine-tuning jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobLine:
    id: str
    model: str
    status: str
    backend: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None
    suffix: str | None


@dataclass(frozen=True)
class JobsPage:
    jobs: list[JobLine]
    next_url: str | None


@dataclass(frozen=True)
class EventLine:
    created_at: int
    level: str
    type: str
    message: str


@dataclass(frozen=True)
class CheckpointLine:
    id: str
    step: int
    model: str
    created_at: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class JobPage:
    job: JobLine
    error: dict[str, Any] | None
    hyperparameters: dict[str, Any]
    training_file: str | None
    validation_file: str | None
    trained_tokens: int | None
    progress: dict[str, Any]
    events: list[EventLine]
    checkpoints: list[CheckpointLine]
    chart: str
    can_cancel: bool


# --- routes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteLine:
    id: str
    name: str
    teacher: str
    match: str  # "prompt=router, prompt_version=c0ffee1" or "all traffic"
    student: str
    mode: RouteMode
    percent: float
    requests: int
    fallback_rate: float | None
    online_pass_rate: float | None
    saved_usd: float


@dataclass(frozen=True)
class RoutesPage:
    routes: list[RouteLine]
    next_url: str | None


@dataclass(frozen=True)
class RouteEventLine:
    created_at: int
    type: str
    actor: str
    change: str  # "shadow → canary"
    reason: str


@dataclass(frozen=True)
class RateLine:
    label: str
    graded: int
    pass_rate: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class PhaseLine:
    """One stretch of a route in one mode: who answered, fallbacks, pass rate, cost."""

    label: str  # "shadow", "canary 50%", "full"
    cause: str  # created, mode_changed, rolled_back
    started_at: int
    requests: int
    teacher: int
    student: int
    fallback: int
    rate: RateLine  # the student's answers to users; in shadow, its agreement with the teacher
    cost_per_1k: float | None
    saved_usd: float


@dataclass(frozen=True)
class RoutePage:
    route: RouteLine
    served: list[tuple[str, int]]
    models: list[tuple[str, int]]
    rates: list[RateLine]
    fallback_reasons: list[tuple[str, int]]
    graders: list[tuple[str, str, bool]]  # name, type, blocking
    gate: str  # a sentence: what the gate looks at
    floor: float | None
    window: int
    teacher_cost_per_1k: float | None
    student_cost_per_1k: float | None
    training_cost_usd: float
    payback_days: float | None
    events: list[RouteEventLine]
    spec_json: str
    phases: list[PhaseLine]
    timeline_chart: str  # SVG: who answered each request, the phases, the gate and rollbacks


# --- judges --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgesPage:
    calibrations: list[dict[str, Any]]  # stored ``distillery.judge_calibration`` objects

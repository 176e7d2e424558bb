"""Each template uses only what its page context declares (datasette's template-context test)."""

from __future__ import annotations

import dataclasses

import pytest
from jinja2 import nodes

from distillery.web import contexts
from distillery.web.lineage import ModelLineagePage
from distillery.web.render import TEMPLATES, environment

PAGES: dict[str, type] = {
    "overview.html": contexts.OverviewPage,
    "completions.html": contexts.CompletionsPage,
    "completion.html": contexts.CompletionDetailPage,
    "models.html": contexts.ModelsPage,
    "costs.html": contexts.CostsPage,
    "annotations.html": contexts.AnnotationsPage,
    "queue.html": contexts.QueuePage,
    "annotation_item.html": contexts.ItemPage,
    "datasets.html": contexts.DatasetsPage,
    "dataset.html": contexts.DatasetPage,
    "evals.html": contexts.EvalsPage,
    "eval_run.html": contexts.RunPage,
    "compare.html": contexts.ComparePage,
    "jobs.html": contexts.JobsPage,
    "job.html": contexts.JobPage,
    "error.html": contexts.ErrorPage,
    "login.html": contexts.LoginPage,
    "routes.html": contexts.RoutesPage,
    "route.html": contexts.RoutePage,
    "judges.html": contexts.JudgesPage,
    "distillation.html": contexts.DistillationPage,
    "model_lineage.html": ModelLineagePage,
}


def _attributes(template: str, name: str) -> set[str]:
    env = environment()
    source = env.loader.get_source(env, template)[0]  # type: ignore[union-attr]
    tree = env.parse(source)
    return {
        node.attr
        for node in tree.find_all(nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == name
    }


def test_every_page_template_has_a_context() -> None:
    pages = {p.name for p in TEMPLATES.glob("*.html") if not p.name.startswith(("_", "base"))}
    assert pages == set(PAGES)


@pytest.mark.parametrize("template", sorted(PAGES))
def test_template_uses_only_its_context(template: str) -> None:
    cls = PAGES[template]
    declared = {f.name for f in dataclasses.fields(cls)} | {
        n for n in dir(cls) if not n.startswith("_")
    }
    used = _attributes(template, "page")
    assert used, f"{template} shows nothing of its page"
    assert used <= declared, f"{template} uses {sorted(used - declared)} not in {cls.__name__}"
    layout = {f.name for f in dataclasses.fields(contexts.Layout)}
    assert _attributes("base.html", "layout") <= layout

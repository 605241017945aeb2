"""report.html as a reader sees it, in headless Chromium: sections visible, every plot decoded, no
console errors and no network requests (the report must be self-contained). Skipped, with the reason,
where no Chromium is installed (`make test` installs it when run as root)."""

from __future__ import annotations

import pytest
from browser import find_chromium, open_page
from conftest import tiny_config

from lmtune.config import validate
from lmtune.runs import open_run

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium on PATH: `make test` installs it as root (apt-get install -y chromium); "
    "or set LMTUNE_CHROMIUM to a Chromium/Chrome binary",
)


def assert_clean(page, images: int) -> None:
    assert page.errors == [] and page.requests == [] and page.failed == []
    assert len(page.images) >= images
    assert page.decoded == len(page.images), page.images


def test_run_report_shows_its_sections_and_plots(tiny_model_dir, labelled_csv, tmp_path):
    from lmtune.tasks.classify import prepare, train

    config = validate(tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs"), "test")
    with open_run(config) as run_dir:
        train(config, prepare(config), run_dir)
    page = open_page(tmp_path / "runs" / "run" / "report.html")
    lines = page.text.splitlines()
    for heading in (
        "Run",
        "Test metrics: before and after",
        "Training curves",
        "Per-class scores (tuned)",
        "Confusion matrices (test)",
        "Resolved config",
    ):
        assert heading in lines, heading
    assert_clean(page, images=4)  # comparison bars, curves, a confusion matrix per model


def test_cross_validation_report_shows_its_sections_and_plots(cv_run):
    run_dir, _, _ = cv_run
    page = open_page(run_dir / "report.html")
    lines = page.text.splitlines()
    for heading in (
        "Run",
        "Cross-validation: mean ± std over the folds (tuned model, test split)",
        "Scores across folds",
        "Folds",
        "Resolved config",
    ):
        assert heading in lines, heading
    assert any(line.startswith("accuracy\t") and " ± " in line for line in lines)
    assert_clean(page, images=1)
    fold = open_page(run_dir / "folds" / "fold-2" / "report.html")
    assert "Training curves" in fold.text.splitlines()
    assert_clean(fold, images=3)  # comparison bars, curves, the tuned model's confusion matrix


def test_the_check_catches_console_errors_broken_images_and_requests(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!doctype html><html><body><h2>Visible</h2><p style='display:none'>hidden</p>"
        '<img src="data:image/png;base64,AAAA"><img src="https://example.com/plot.png">'
        '<script>console.error("x")</script></body></html>'
    )
    page = open_page(bad)
    assert page.text.splitlines() == ["Visible"]
    assert "error: x" in page.errors
    assert len(page.images) == 2 and page.decoded == 0
    assert page.requests == ["https://example.com/plot.png"]  # asked for, and blocked
    assert page.failed and "ERR_BLOCKED_BY_CLIENT" in page.failed[0]

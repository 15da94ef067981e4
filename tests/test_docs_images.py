"""The documentation site shows the benchmark plots: every image it links exists under docs/, and each copy in
docs/img/ is the plot its script last wrote to benchmarks/results/ (a stale copy would show other numbers)."""

import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")
DOCS = os.path.join(ROOT, "docs")


def test_image_links_resolve_and_copies_match_the_results():
    links = []
    for name in os.listdir(DOCS):
        if name.endswith(".md"):
            with open(os.path.join(DOCS, name)) as f:
                links += re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", f.read())
    assert "img/convergence_hwu64-scenario.png" in links and "img/adaptive_curve.png" in links
    for link in links:
        assert os.path.isfile(os.path.join(DOCS, link)), link
    for name in os.listdir(os.path.join(DOCS, "img")):
        with (
            open(os.path.join(DOCS, "img", name), "rb") as copy,
            open(os.path.join(ROOT, "benchmarks", "results", name), "rb") as original,
        ):
            assert copy.read() == original.read(), name

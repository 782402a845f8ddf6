"""html_page: the one frame of the trace page and the comparison page."""

from __future__ import annotations

from agentplex.sim import Comparison, Series, comparison_html
from agentplex.tracing.lowlevel import html_page


def test_a_page_escapes_its_title_and_carries_the_base_and_its_own_rules() -> None:
    page = html_page("a <b> & c", "<p>hi</p>", ".mine{color:red}\n", width=900)
    assert page.startswith("<!doctype html>")
    assert "<title>a &lt;b&gt; &amp; c</title>" in page
    assert "max-width:900px" in page and ".mine{color:red}" in page
    assert "th,td{" in page and "<body><p>hi</p></body>" in page


def test_the_comparison_page_is_framed_like_the_trace_page() -> None:
    comparison = Comparison(sources=["a"], metrics={"m": [Series("a", [1, 2], [0.5, 1.0])]})
    page = comparison_html(comparison, "t")
    head = html_page("t", "", "")
    base = head[head.index("<style>"):head.index("</style>")].replace("1100px", "1000px")
    assert base in page

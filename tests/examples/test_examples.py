"""Every example runs as its docstring says, in its fast form (no model, small sizes)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_react_agent_uses_its_tools() -> None:
    out = run(str(EXAMPLES / "react_tools.py"), "--model", "scripted")
    assert "← calculate: 391" in out and "← capital: Paris" in out
    assert out.strip().endswith("answer: 17 * 23 is 391, and the capital of France is Paris.")


def test_debate_ends_with_a_structured_verdict() -> None:
    out = run(str(EXAMPLES / "debate.py"), "--model", "scripted", "--rounds", "2")
    assert out.count("Pro:") == 2 and out.count("Con:") == 2
    assert "verdict: {'winner': 'Pro'" in out


@pytest.mark.parametrize("agents", ["10", "2000"])
def test_simulation_prints_its_timing(agents: str) -> None:
    out = run(str(EXAMPLES / "simulation.py"), "--agents", agents, "--rounds", "2")
    assert f"{agents} agents, 2 rounds" in out
    assert "round 1:" in out and "replies/s" in out and "total:" in out


def test_every_example_is_tested() -> None:
    """Each example is run by some test (here, or beside the feature it shows)."""
    tests = "".join(p.read_text() for p in (EXAMPLES.parent / "tests").rglob("test_*.py"))
    untested = [p.name for p in EXAMPLES.glob("*.py")
                if p.name != "__init__.py" and p.name not in tests]
    assert not untested, untested


def test_shared_pipeline_tool_is_placed_on_the_gpu_node_and_loaded_once() -> None:
    out = run(str(EXAMPLES / "shared_pipeline_tool.py"), "--agents", "3")
    assert "pipeline tool placed on gpu-node" in out
    assert out.count("The classifier says") == 3
    assert "3 calls served by one loaded pipeline (sentiment)" in out


def test_shared_pipeline_tool_reports_a_pipeline_that_fails(tmp_path: Path) -> None:
    """The docstring's ``--pipeline-model path/to/classifier`` with no classifier there:
    each agent reports the tool's error."""
    out = run(str(EXAMPLES / "shared_pipeline_tool.py"), "--agents", "2",
              "--pipeline-model", str(tmp_path / "no-classifier"))
    assert out.count("The classifier failed: Error:") == 2
    assert "served by no loaded pipeline" in out

"""The README's two commands are the ones CI and newcomers run."""
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _commands():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"<!-- command (\d) -->\s*```(?:bash|sh)?\n(.*?)\n```", readme, re.S)
    return {n: body.strip() for n, body in blocks}


def test_readme_has_two_commands_and_ci_runs_the_second():
    cmds = _commands()
    assert set(cmds) == {"1", "2"}
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert cmds["2"] in ci.splitlines()
    # torch is installed first and by the version on disk, never as an open range
    for c in cmds.values():
        assert c.index("torch==2.13.0") < c.index("-e ")
    assert "rasd demo" in cmds["1"]

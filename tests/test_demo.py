"""The README's two commands: ``gateway demo`` needs no services and every example its banner
prints works as printed, with what the first command installs; CI runs the second verbatim."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from gateway.cli import _print_demo_banner
from tests.support.servers import free_port, stop_process, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-gw-demoDEMOdemo0123456789abcdefghijklmnopqrst"
ADMIN_TOKEN = "demo-admin-token"


def _readme_commands() -> list[str]:
    """The README's ``sh`` blocks before its first section: the demo command, the test command."""
    intro = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", intro, re.DOTALL)]


def _requirements(extras: list[str]) -> set[str]:
    """Every distribution the package's ``extras`` pull in, the package's own extras that they
    name (``gateway[torch]``) followed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names: set[str] = set()
    pending = list(extras)
    while pending:
        for requirement in project["optional-dependencies"][pending.pop()]:
            match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", requirement)
            assert match, requirement
            if match.group(1) == project["name"]:
                pending.extend(e.strip() for e in (match.group(2) or "").split(","))
            else:
                names.add(match.group(1).lower().replace("_", "-"))
    return names


def _commands(banner: str) -> list[str]:
    """The shell commands a banner shows: lines starting with ``curl`` or an interpreter's
    ``-c``, with their backslash-continued lines, exactly as a user would copy them."""
    commands: list[str] = []
    current: list[str] | None = None
    for line in banner.splitlines():
        if current is None and re.match(r"\s+(curl |\S+ -c )", line):
            current = []
        if current is not None:
            current.append(line)
            if not line.endswith("\\"):
                commands.append("\n".join(current).strip())
                current = None
    return commands


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    demo, tests = _readme_commands()
    assert demo.endswith("gateway demo")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, f"{tests!r} is not a line of .ci/run"


def test_the_readmes_first_command_installs_what_the_banners_examples_import(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The banner's SDK example must not fail with ModuleNotFoundError after the first command:
    every module it imports comes from a distribution that command's extras install."""
    demo = _readme_commands()[0]
    extras = re.search(r'-e "\.\[([^\]]+)\]"', demo)
    assert extras, demo
    installed = _requirements([e.strip() for e in extras.group(1).split(",")])
    _print_demo_banner(argparse.Namespace(host="127.0.0.1", port=8000, upstream_port=8001),
                       API_KEY, ADMIN_TOKEN)
    banner = capsys.readouterr().out
    modules = {name for names in re.findall(r"\bfrom (\w+) import|\bimport (\w+)", banner)
               for name in names if name}
    assert modules == {"openai"}  # the SDK example is printed (openai is installed here)
    providers = importlib.metadata.packages_distributions()
    for module in modules:
        assert {d.lower() for d in providers[module]} & installed, (module, installed)


@pytest.mark.e2e  # a real gateway process, with the reference model server loading torch
def test_demo_serves_the_sdk_with_the_printed_key_and_admin_token(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    process = _start_demo(tmp_path / "state", port, log)
    try:
        wait_healthy(base, process, log)
        client = OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0)
        reply = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.content
        accounts = httpx.get(base + "/admin/v1/accounts",
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        assert [a["name"] for a in accounts["items"]] == ["demo"]

        # The banner's examples, run as printed (by a shell, in no particular environment).
        banner = log.read_text()
        chat, sdk = [c for c in _commands(banner) if "/v1/chat/completions" in c
                     or "from openai import" in c]
        assert API_KEY in chat and API_KEY in sdk
        answer = _shell(chat)
        assert json.loads(answer)["choices"][0]["message"]["content"], answer
        assert _shell(sdk).strip()
    finally:
        stop_process(process)
    assert API_KEY in log.read_text()

    # A second run on the same state reuses the account and the key.
    process = _start_demo(tmp_path / "state", port, log)
    try:
        wait_healthy(base, process, log)
        assert OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0).models.list().data
    finally:
        stop_process(process)


def _start_demo(state: Path, port: int, log: Path) -> subprocess.Popen[str]:
    """``gateway demo`` with its output in ``log`` (read while it runs: the banner)."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "demo", "--upstream", "reference",
             "--port", str(port),
             "--upstream-port", str(free_port()), "--api-key", API_KEY,
             "--admin-token", ADMIN_TOKEN, "--state-dir", str(state)],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )


def _shell(command: str) -> str:
    """Run a copied command in bash, as a user would paste it; its stdout."""
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, f"{command}\nexited {done.returncode}:\n{done.stderr}"
    return done.stdout



"""``gateway demo`` stopped with SIGTERM unwinds its context managers (the vLLM it started is
stopped, not orphaned) even though uvicorn raises the signal again once it has shut down."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.servers import free_port
from tests.support.waiting import STARTUP_TIMEOUT_S, wait_until

SERVER = textwrap.dedent("""
    import asyncio, sys
    from contextlib import contextmanager
    from pathlib import Path

    import uvicorn

    from gateway.cli import unwind_on_sigterm

    async def app(scope, receive, send):
        pass

    @contextmanager
    def upstream(marker: Path):
        try:
            yield
        finally:  # what the demo's vLLM context manager does: stop the child
            marker.write_text("stopped")

    marker, port = Path(sys.argv[1]), int(sys.argv[2])
    if sys.argv[3] == "unwind":
        unwind_on_sigterm()
    with upstream(marker):
        config = uvicorn.Config(app, port=port, log_level="warning", lifespan="off")
        asyncio.run(uvicorn.Server(config).serve())
""")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _terminated(tmp_path: Path, mode: str) -> tuple[int, bool]:
    """(exit status, whether the context manager's cleanup ran) after SIGTERM mid-serve."""
    marker, port = tmp_path / f"marker-{mode}", free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(marker), str(port), mode])
    try:  # listening: uvicorn's signal handlers are in place (they wrap the whole serve())
        wait_until(lambda: _listening(port), timeout=STARTUP_TIMEOUT_S, what="uvicorn serving")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return code, marker.exists()


def test_sigterm_unwinds_the_demos_context_managers(tmp_path: Path) -> None:
    assert _terminated(tmp_path, "unwind") == (128 + signal.SIGTERM, True)


def test_without_it_uvicorn_re_raised_sigterm_kills_before_unwinding(tmp_path: Path) -> None:
    """The failure this guards against, shown: the default handler, the child orphaned."""
    assert _terminated(tmp_path, "default") == (-signal.SIGTERM, False)

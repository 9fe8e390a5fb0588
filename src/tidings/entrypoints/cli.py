"""The `tidings` command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel

from .. import __version__
from ..domain.errors import NotConfigured, TidingsError
from ..settings import Settings

if TYPE_CHECKING:
    from ..bootstrap import Container

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Tidings: one notification service for every app of a company.")
err = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        for e in exc.errors():
            name = "TIDINGS_" + "_".join(str(p) for p in e["loc"]).upper()
            err.print(f"[red]error:[/] {name}: {e['msg']}")
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A line per WebSocket connection only when debugging.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("tidings.stream.protocol").setLevel(logging.WARNING)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _collect_less() -> None:
    """Collect the young generation after 20,000 allocations instead of 700: a send of 1,000
    notifications lives through hundreds of young collections at the default, which moves its
    objects to the old generation just before they die, and every few sends the collector then
    walks all old objects, with every open stream's among them (about 30 % of a broadcast's
    CPU with 10,000 streams open)."""
    gc.set_threshold(20_000, 20, 10)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


async def _start(settings: Settings, *, admin: bool) -> Container:
    """Build everything and bring the schema up to date; with `admin`, also make sure the
    operator has a key and show a newly made one once. Failures end the command clearly."""
    from ..bootstrap import build

    try:
        container = build(settings)
        if not admin:
            await container.store.migrate()
            return container
        new_admin = await container.prepare()
    except (TidingsError, OSError) as exc:
        raise _fail(exc) from None
    if new_admin:
        err.print(Panel.fit(
            f"[bold]{new_admin}[/]\n\nThis admin key is shown once: keep it now. "
            "Set TIDINGS_ADMIN_KEY to choose your own.", title="First start: admin key"))
    return container


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """Ends open streams as soon as the server is asked to stop: the server waits for open
        responses before it stops, and an event stream never ends by itself."""

        def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
            super().__init__(config)
            self._on_exit = on_exit

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon_threadsafe(self._on_exit)

    return Server


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    worker: Annotated[bool, typer.Option("--worker/--no-worker",
                                         help="run the delivery worker in this process")] = True,
) -> None:
    """Serve the HTTP API (and, unless --no-worker, deliver in the same process)."""
    import uvicorn

    from .http.app import create_app
    from .stream.front import Front
    from .stream.wsprotocol import WebSocketProtocol

    _Server = _server_class()

    settings = _settings()
    _logging(settings.log_level)

    async def main() -> None:
        container = await _start(settings, admin=True)
        app = create_app(container, run_worker=worker, close_container=True)
        # Streams: no permessage-deflate (it costs ~45 KiB of zlib state per connection, for
        # events of a few hundred bytes); client frames are small; pings are the heartbeat.
        config = uvicorn.Config(Front(app), host=host, port=port,
                                log_level=settings.log_level.lower(),
                                access_log=False, proxy_headers=True, server_header=False,
                                ws=WebSocketProtocol, ws_per_message_deflate=False,
                                ws_max_size=settings.stream_max_frame_bytes,
                                ws_ping_interval=settings.stream_heartbeat_seconds,
                                ws_ping_timeout=settings.stream_heartbeat_seconds,
                                # Streams are told to close first; a client that does not
                                # let go in this time is cut off rather than awaited.
                                timeout_graceful_shutdown=15)
        err.print(f"Tidings {__version__} on http://{host}:{port} "
                  f"({'SQLite' if settings.is_sqlite else 'PostgreSQL'}"
                  f"{', with worker' if worker else ''})")
        # What is loaded by now lives as long as the process: keep the collector off it.
        gc.freeze()
        _collect_less()
        await _Server(config, app.state.streams.shutdown).serve()

    _run(main())


@cli.command("worker")
def worker_command() -> None:
    """Run the delivery worker alone (cluster mode: any number of them)."""
    from .worker import run_worker

    settings = _settings()
    _logging(settings.log_level)

    async def main() -> None:
        container = await _start(settings, admin=False)
        gc.freeze()
        _collect_less()
        await run_worker(container)

    _run(main())


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date (serve and worker do this on start too)."""

    settings = _settings()
    _logging(settings.log_level)

    async def main() -> None:
        container = await _start(settings, admin=True)
        await container.close()

    asyncio.run(main())
    out.print("schema is up to date")


@cli.command("secret-key")
def secret_key() -> None:
    """Print a new key for TIDINGS_SECRET_KEY."""
    from ..service.secrets import SecretBox

    out.print(SecretBox.generate())


@cli.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    try:
        cli()
    except NotConfigured as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)

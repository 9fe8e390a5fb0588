"""The `tidings` command."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Coroutine
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


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


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

    settings = _settings()
    _logging(settings.log_level)

    async def main() -> None:
        container = await _start(settings, admin=True)
        app = create_app(container, run_worker=worker, close_container=True)
        config = uvicorn.Config(app, host=host, port=port, log_level=settings.log_level.lower(),
                                access_log=False, proxy_headers=True, server_header=False)
        err.print(f"Tidings {__version__} on http://{host}:{port} "
                  f"({'SQLite' if settings.is_sqlite else 'PostgreSQL'}"
                  f"{', with worker' if worker else ''})")
        # What is loaded by now lives as long as the process: keep the collector off it.
        gc.freeze()
        await uvicorn.Server(config).serve()

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

"""What every ``hashex`` verb shares: exit codes, error reporting, output, settings."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from client.errors import EXIT_OK, HubRefusedError, exit_code
from client.limits import Limits
from client.protocol.errors import HashexError, VerificationError
from client.settings import ClientSettings
from client.store import Store

if TYPE_CHECKING:
    from client.transport import HubClient

P = ParamSpec("P")
R = TypeVar("R")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(code: int, message: str) -> NoReturn:
    """Print ``message`` on stderr and leave with exit ``code``."""
    click.echo(f"hashex: {message}", err=True)
    sys.exit(code)


def describe_error(error: HashexError) -> str:
    """The one-line message for an error, with the hub's problem type when refused."""
    if isinstance(error, HubRefusedError):
        return f"hub refused ({error.status}): {error.problem_type}: {error.detail}"
    if isinstance(error, VerificationError):
        return f"verification failed: {error}"
    return str(error)


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn library errors into the contract's exit codes with a clear message."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except HashexError as exc:
            fail(exit_code(exc), describe_error(exc))
        except BrokenPipeError:
            # The reader hung up (``| head -1``, a tool that found what it
            # wanted): it got what it asked for. End quietly with success,
            # never with 1, which would claim "no match" after printing one.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_OK)

    return wrapper


def emit(as_json: bool, payload: Any, text: str) -> None:
    """Print a result as one JSON object or as text for people."""
    click.echo(json.dumps(payload, sort_keys=True) if as_json else text)


home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local store and trust (default: HASHEX_HOME, else XDG data dir).",
)


def hub_options(func: Callable[P, R]) -> Callable[P, R]:
    """``--server``, ``--token`` and ``--home``; each beats its HASHEX_* variable."""
    func = home_option(func)
    func = click.option("--token", help="Bearer token (default: HASHEX_TOKEN).")(func)
    func = click.option("--server", help="Hub URL (default: HASHEX_SERVER).")(func)
    return func


def settings_from(server: str | None, token: str | None, home: Path | None) -> ClientSettings:
    """The client's settings: flags first, then the environment."""
    return ClientSettings.resolve(server=server, token=token, home=home)


@contextmanager
def open_store(settings: ClientSettings) -> Iterator[Store]:
    """The local store under the settings' home, closed afterwards."""
    store = Store.open(settings.home, batch_hook=batch_hook_from_env())
    try:
        yield store
    finally:
        store.close()


def hub_client(settings: ClientSettings) -> HubClient:
    """A client of the configured hub; a hub and a token are required."""
    # Imported here: the verbs that never talk to a hub start without httpx.
    from client.transport import HubClient

    settings.require_server()
    settings.require_token()
    return HubClient(settings, Limits())


def batch_hook_from_env() -> Callable[[int], None] | None:
    """The crash-test hook, only when HASHEX_TEST_BATCH_HOOK names a directory.

    After each applied batch the hook writes ``batch-<n>`` there; when
    ``HASHEX_TEST_PAUSE_AT`` names that batch it then waits, so a test can kill
    the process at exactly that moment instead of guessing with sleeps.
    """
    directory = os.environ.get("HASHEX_TEST_BATCH_HOOK")
    if not directory:
        return None
    pause_at = os.environ.get("HASHEX_TEST_PAUSE_AT", "")

    def hook(number: int) -> None:
        Path(directory, f"batch-{number}").touch()
        if pause_at == str(number):
            # Held until the test kills us; bounded so nothing hangs forever.
            time.sleep(60)

    return hook

"""The ``kathan`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import gc
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from kathan.auth.keys import generate_key
from kathan.cli_config import ConfigFault, load_settings, serve_epilog, settings_table
from kathan.errors import InvalidRequestError, KathanError
from kathan.limits.base import Limits, QuotaPeriod
from kathan.service.drain import Drain
from kathan.settings import Settings
from kathan.store import repo as store
from kathan.store.db import Database, safe_url
from kathan.store.models import Account, ApiKey


def _describe(name: str) -> str:
    return Settings.model_fields[name].description or ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kathan", description="Kathan LLM API service.")
    parser.add_argument("-V", "--version", action="version",
                        version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="Serve the OpenAI-compatible API.", epilog=serve_epilog(),
        description="Serve the OpenAI-compatible API.")
    serve.add_argument("--host", help=_describe("host") + " Default 127.0.0.1.")
    serve.add_argument("--port", type=int, help=_describe("port") + " Default 8000.")
    serve.add_argument("--config", type=Path, help=_describe("config_file"))
    serve.add_argument("--log-level", type=str.lower,
                       choices=("critical", "error", "warning", "info", "debug"),
                       help="Log level for Kathan and uvicorn. Default info.")
    _add_store_commands(sub)
    _add_config_commands(sub)
    return parser


def _version() -> str:
    try:
        return metadata.version("kathan")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from kathan import __version__

        return __version__


GENERATED_KEY_FILE = "api-key.txt"


def serve(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    flags = {"host": "--host", "port": "--port", "log_level": "--log-level"}
    for name in ("host", "port", "log_level"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.config is not None:
        overrides["config_file"] = args.config
    settings = load_settings(overrides, flags)
    # The app is imported once the settings are known good: a bad config is refused in a
    # moment, not after the whole server's modules loaded.
    import uvicorn

    from kathan.app import create_app, write_secret

    asyncio.run(_preflight(settings))
    listener = _listen(settings.host, settings.port)
    # The port actually bound (port 0 asks the system for one), for the ready line.
    settings = settings.model_copy(update={"port": listener.getsockname()[1]})
    if not settings.api_keys and not settings.accounts:
        # Without the store there is no admin key to bootstrap; make one for this run.
        # Like the bootstrap admin key, it goes to a file only its owner reads, never to
        # the log stream, where collectors would keep it.
        key = generate_key()
        settings = settings.model_copy(update={"api_keys": [key]})
        path = write_secret(settings.data_dir / GENERATED_KEY_FILE, key)
        print(
            "No API keys configured (set KATHAN_API_KEYS) and accounts are off: Kathan "
            f"generated a key for this run, in {path} (readable by this user only).",
            file=sys.stderr,
            flush=True,
        )
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    tune_gc()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop=settings.event_loop,
        http="httptools",
        log_level=settings.log_level,
        # Access lines are info-level: below that, skip building them at all.
        access_log=settings.log_level in ("debug", "info"),
        # What is left after the app's own drain (see _server) gets this long.
        timeout_graceful_shutdown=5,
        # The client's address is the socket's peer unless the operator names the proxies
        # whose X-Forwarded-For may say otherwise (it throttles registration, for one).
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips or "",
    )
    server = _server(config, app.state.serving, app.state.drain)
    server.run(sockets=[listener])
    return 0 if server.started else 1


def _server(config: Any, serving: asyncio.Event, drain: Drain) -> Any:
    """uvicorn's server, which tells the app when its socket accepts connections (the
    app's "Kathan is ready" line waits for that), and stops in two steps.

    uvicorn alone, on SIGTERM, closes its socket at once and gives running requests a
    fixed time before it cancels them mid-answer. Here the first SIGTERM or SIGINT
    after start-up begins the app's ``Drain`` (/ready and new requests answer 503,
    running requests get ``shutdown_grace_seconds``, the rest end cleanly), and only
    then does uvicorn's own shutdown run (socket closed, lifespan shutdown: the last
    ledger rows written). A second signal exits at once.
    """
    import uvicorn

    class Server(uvicorn.Server):
        draining: asyncio.Task[None] | None = None
        loop: asyncio.AbstractEventLoop | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets)
            if not self.should_exit:
                serving.set()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.started and self.loop is not None and not (
                    self.should_exit or self.draining is not None or drain.draining):
                self._captured_signals.append(sig)  # raised again at exit, as uvicorn does
                drain.draining = True  # a second signal from here on forces the exit
                self.loop.call_soon_threadsafe(self._begin_drain)
                return
            if self.started:
                self.force_exit = True
            super().handle_exit(sig, frame)

        def _begin_drain(self) -> None:
            self.draining = asyncio.ensure_future(self._drain())

        async def _drain(self) -> None:
            try:
                await drain.stop()
            finally:
                self.should_exit = True

    return Server(config)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, before anything loads: a port that is taken is
    one line and exit status 1, not a traceback after the model has loaded."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise _CommandError(f"cannot listen on {shown}: unknown address ({exc.strerror})") \
            from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise _CommandError(
                f"cannot listen on {shown}: the address is already in use (another process "
                "holds the port; choose another with --port or KATHAN_PORT)") from None
        raise _CommandError(f"cannot listen on {shown}: {exc.strerror or exc}") from None
    listener.set_inheritable(True)
    return listener


async def _preflight(settings: Settings) -> None:
    """What would make the server fail at start-up, checked first so that it is one line:
    the models as configured, the local models' files and whether they fit in memory,
    the store."""
    from kathan.cli_models import check_memory, local_needs, report

    await report(settings, with_probe=False)
    if settings.memory_check:
        check_memory(local_needs(settings))
    if not settings.accounts:
        return
    try:
        database = Database.from_settings(settings)
    except ValueError as exc:
        raise _CommandError(f"database_url: {exc}") from None
    try:
        await database.upgrade()
    except (OSError, SQLAlchemyError) as exc:
        raise _CommandError(
            f"cannot open the store at {safe_url(database.url)}: {_reason(exc)} (check "
            "KATHAN_DATABASE_URL or data_dir, or set KATHAN_ACCOUNTS=false)") from None
    finally:
        await database.dispose()


def _reason(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return (str(cause).splitlines() or [type(cause).__name__])[0]


def tune_gc() -> None:
    """The cyclic garbage collector, set for a long-lived server.

    Requests free nearly everything they make by reference counting, yet with
    the default threshold (700 net new objects) a collection ran every few
    dozen requests, and now and then a full one walked every module, schema
    and route, stalling all requests for a hundred milliseconds and more. What
    exists before serving (imported modules, the app) is frozen out of the
    collector's sight, and the youngest generation is collected ten times
    less often.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(7000, middle, old)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command in ("db", "keys", "accounts", "usage"):
            return run_store_command(args)
        if args.command in ("models", "config"):
            return int(args.config_command(args))
    except (ConfigFault, _CommandError) as exc:
        print(f"kathan: {exc}", file=sys.stderr)
        return exc.status if isinstance(exc, _CommandError) else 1
    except KeyboardInterrupt:
        return 130
    return 2


# Store commands: `kathan db upgrade`, `kathan accounts create` and
# `kathan keys create|list|revoke`.


class _CommandError(Exception):
    """A store command's failure: its message goes to stderr, ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _add_store_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config_help = _describe("config_file")
    db = sub.add_parser("db", help="Manage the store's database.")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="Apply the database migrations.")
    upgrade.add_argument("--config", type=Path, help=config_help)
    upgrade.set_defaults(store_command=_db_upgrade)

    accounts = sub.add_parser("accounts", help="Create accounts (registration is closed by "
                              "default: an operator makes them).")
    accounts_sub = accounts.add_subparsers(dest="accounts_command", required=True)
    make = accounts_sub.add_parser(
        "create", help="Create an account; with --email, its holder logs in with a password "
        "read from standard input.")
    make.add_argument("--name", required=True, type=_nonempty, help="The account's name.")
    make.add_argument("--email", type=_nonempty, help="Login email (then a password is read).")
    make.add_argument("--admin", action="store_true", help="Make the account an admin.")
    make.add_argument("--config", type=Path, help=config_help)
    make.set_defaults(store_command=_accounts_create)
    listing = accounts_sub.add_parser("list", help="List accounts, with their keys in use.")
    listing.add_argument("--config", type=Path, help=config_help)
    listing.set_defaults(store_command=_accounts_list)
    for verb, disabled, text in (
        ("disable", True, ("Disable an account: its keys and logins stop working (a running "
         "server may accept its keys for up to key_cache_seconds more).")),
        ("enable", False, "Enable a disabled account again."),
    ):
        change = accounts_sub.add_parser(verb, help=text, description=text)
        change.add_argument("account", type=_nonempty, help="The account's id, email or name.")
        change.add_argument("--config", type=Path, help=config_help)
        change.set_defaults(store_command=_accounts_set_disabled, disabled=disabled)

    usage = sub.add_parser(
        "usage", help="Usage by day and model, from the store's ledger (as GET /admin/usage).",
        description="Requests and tokens by UTC day and model, from the usage ledger: "
        "everyone's, one account's or one key's.")
    who = usage.add_mutually_exclusive_group()
    who.add_argument("--account", type=_nonempty, help="Only this account (id, email or name).")
    who.add_argument("--key", type=_nonempty, help="Only this key (its id or prefix).")
    usage.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="First UTC day.")
    usage.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="Last UTC day.")
    usage.add_argument("--json", action="store_true",
                       help="Print the report as JSON, in the admin API's shape.")
    usage.add_argument("--config", type=Path, help=config_help)
    usage.set_defaults(store_command=_usage)

    keys = sub.add_parser("keys", help="Create, list and revoke API keys.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="Create an API key and print it, once.")
    create.add_argument("--name", required=True, type=_nonempty, help="What the key is for.")
    create.add_argument(
        "--account",
        type=_nonempty,
        help="Account id, email or name. A name that matches no account creates one. "
        "Default: the account named 'default'.",
    )
    create.add_argument(
        "--models", type=_model_list, help="Comma-separated models the key may use. Default: all."
    )
    create.add_argument("--rpm", type=_positive_int, help="Requests per minute.")
    create.add_argument("--tpm", type=_positive_int, help="Tokens per minute.")
    create.add_argument("--max-concurrent", type=_positive_int, help="Requests in flight at once.")
    create.add_argument("--max-tokens", type=_positive_int,
                        help="The most max_tokens one request may ask (and its default).")
    create.add_argument(
        "--quota-tokens",
        type=_quota,
        metavar="N/day|N/month",
        help="Tokens per UTC day or month, e.g. 100000/day.",
    )
    create.add_argument(
        "--expires",
        type=_expiry,
        metavar="DATE",
        help="When the key stops working: YYYY-MM-DD (00:00 UTC) or an ISO 8601 datetime.",
    )
    create.add_argument(
        "--admin", action="store_true", help="Make the account an admin (when this creates it)."
    )
    create.add_argument("--config", type=Path, help=config_help)
    create.set_defaults(store_command=_keys_create)

    listing = keys_sub.add_parser("list", help="List keys (their prefixes, never the keys).")
    listing.add_argument("--account", type=_nonempty, help="Only this account's keys.")
    listing.add_argument("--active", action="store_true", help="Hide revoked and expired keys.")
    listing.add_argument("--config", type=Path, help=config_help)
    listing.set_defaults(store_command=_keys_list)

    revoke = keys_sub.add_parser("revoke", help="Revoke a key.")
    revoke.add_argument("ref", help="The key's id or prefix (or the whole key).")
    revoke.add_argument("--config", type=Path, help=config_help)
    revoke.set_defaults(store_command=_keys_revoke)


def _add_config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser(
        "models", help="The models a config would serve, and whether each deployment answers.",
        description="The models the configuration would serve (built as `serve` builds "
        "them; no server needs to run), with each deployment: where it is and whether its "
        "key is set. --probe asks each upstream deployment for its models listing.")
    models.add_argument("--probe", action="store_true",
                        help="Ask each upstream deployment whether it answers (exit 1 when "
                        "one does not).")
    models.add_argument("--config", type=Path, help=_describe("config_file"))
    models.set_defaults(config_command=_models)

    config = sub.add_parser("config", help="Check a config file; list every setting.")
    config_sub = config.add_subparsers(dest="config_subcommand", required=True)
    check = config_sub.add_parser(
        "check", help="Validate a config file and list the models it would serve.",
        description="Validate a config file (with the KATHAN_* environment, as serve reads "
        "it) and list the models it would serve. Exit 0 when it is valid, 1 with the "
        "reason when not.")
    check.add_argument("file", type=Path, help="The YAML config file.")
    check.set_defaults(config_command=_config_check, config=None)
    listing = config_sub.add_parser(
        "settings", help="Every setting: its environment variable, default and meaning.")
    listing.set_defaults(config_command=_config_settings, config=None)


def _models(args: argparse.Namespace) -> int:
    from kathan.cli_models import report

    settings = load_settings({} if args.config is None else {"config_file": args.config})
    rows, text = asyncio.run(report(settings, with_probe=args.probe))
    print(text, end="")
    broken = [d.name for row in rows if row.served for d in row.deployments if not d.ok]
    return 1 if args.probe and broken else 0


def _config_check(args: argparse.Namespace) -> int:
    from kathan.cli_models import report

    settings = load_settings({"config_file": args.file})
    rows, text = asyncio.run(report(settings, with_probe=False))
    served = [row.id for row in rows if row.served]
    print(f"{args.file} is valid: it would serve {len(served)} "
          f"model{'' if len(served) == 1 else 's'}.")
    print(text, end="")
    return 0


def _config_settings(args: argparse.Namespace) -> int:
    print(settings_table(), end="")
    return 0


def _date(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat() if len(value) == 10 else _bad_date(value)
    except ValueError:
        return _bad_date(value)


def _bad_date(value: str) -> str:
    raise argparse.ArgumentTypeError(f"expected a date, YYYY-MM-DD, got {value!r}")


def _nonempty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value.strip()


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _model_list(value: str) -> list[str]:
    models = [model.strip() for model in value.split(",") if model.strip()]
    if not models:
        raise argparse.ArgumentTypeError("expected model ids separated by commas")
    return models


def _quota(value: str) -> tuple[int, QuotaPeriod]:
    tokens, _, period = value.partition("/")
    if period not in ("day", "month"):
        raise argparse.ArgumentTypeError(f"expected N/day or N/month, got {value!r}")
    return _positive_int(tokens), "day" if period == "day" else "month"


def _expiry(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected YYYY-MM-DD or an ISO 8601 datetime, got {value!r}"
        ) from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{value} is in the past")
    return when


def run_store_command(args: argparse.Namespace) -> int:
    """Run a store command (`db`, `keys`, `accounts`, `usage`): migrate the store first,
    dispose of it after."""
    settings = load_settings({} if args.config is None else {"config_file": args.config})
    args.settings = settings
    try:
        database = Database.from_settings(settings)
    except ValueError as exc:
        raise ConfigFault(f"database_url: {exc}") from None
    return asyncio.run(_with_store(database, args))


async def _with_store(database: Database, args: argparse.Namespace) -> int:
    command: Callable[[Database, argparse.Namespace], Awaitable[int]] = args.store_command
    try:
        await database.upgrade()
        return await command(database, args)
    except _CommandError as exc:
        print(f"kathan: {exc}", file=sys.stderr)
        return exc.status
    except KathanError as exc:
        print(f"kathan: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidRequestError) else 1
    except (OSError, SQLAlchemyError) as exc:
        print(f"kathan: the database at {safe_url(database.url)} failed: {_reason(exc)}",
              file=sys.stderr)
        return 1
    finally:
        await database.dispose()


async def _db_upgrade(database: Database, args: argparse.Namespace) -> int:
    revision = await database.revision()
    print(f"{safe_url(database.url)} is at revision {revision}")
    return 0


async def _accounts_create(database: Database, args: argparse.Namespace) -> int:
    password = None
    if args.email is not None:
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            raise _CommandError("the password (read from standard input) needs at least "
                                "8 characters", status=2)
    async with database.session() as session:
        account = await store.create_account(session, name=args.name, email=args.email,
                                             password=password, is_admin=args.admin)
        await session.commit()
    print(account.id, flush=True)
    admin = "admin " if account.is_admin else ""
    login = f", who logs in as {account.email}" if account.email else ""
    print(f"Created the {admin}account {account.name!r} ({account.id}){login}.",
          file=sys.stderr)
    return 0


async def _keys_create(database: Database, args: argparse.Namespace) -> int:
    async with database.session() as session:
        ref = args.account or "default"
        account = await store.find_account(session, ref)
        created = account is None
        if account is None:
            account = await store.create_account(session, name=ref, is_admin=args.admin)
        elif args.admin and not account.is_admin:
            raise _CommandError(
                f"the account {account.name} ({account.id}) exists and is not an admin; "
                "--admin applies only to an account this command creates",
                status=2,
            )
        token, key = await store.create_key(
            session,
            account_id=account.id,
            name=args.name,
            models=args.models,
            limits=_key_limits(args, store.limits_of(account)),
            expires_at=args.expires,
        )
        await session.commit()
    print(token, flush=True)
    new = "new " if created else ""
    admin = "admin " if account.is_admin else ""
    print(
        f"Created key {key.id} ({key.prefix}…) named {key.name!r} for the {new}{admin}account "
        f"{account.name!r} ({account.id}).\n"
        f"  models: {_models_cell(key)}; limits: {_limits_cell(key)}; "
        f"expires: {_time_cell(key.expires_at) if key.expires_at else 'never'}\n"
        "The key above is shown only this once.",
        file=sys.stderr,
    )
    return 0


def _key_limits(args: argparse.Namespace, defaults: Limits) -> Limits | None:
    """The account's limits with the ones given replaced; None (the account's) when none are."""
    given: dict[str, Any] = {
        "rpm": args.rpm,
        "tpm": args.tpm,
        "max_concurrent": args.max_concurrent,
        "max_tokens": args.max_tokens,
    }
    if args.quota_tokens is not None:
        given["quota_tokens"], given["quota_period"] = args.quota_tokens
    given = {name: value for name, value in given.items() if value is not None}
    return dataclasses.replace(defaults, **given) if given else None


async def _keys_list(database: Database, args: argparse.Namespace) -> int:
    async with database.session() as session:
        account_id = None
        if args.account is not None:
            account = await store.find_account(session, args.account)
            if account is None:
                raise _CommandError(f"no account has the id, email or name {args.account!r}")
            account_id = account.id
        keys = await store.list_keys(
            session, account_id=account_id, include_revoked=not args.active
        )
        names = {holder.id: holder.name for holder in await store.list_accounts(session)}
    now = datetime.now(UTC)
    rows = [["ID", "PREFIX", "NAME", "ACCOUNT", "MODELS", "LIMITS", "CREATED", "EXPIRES", "REVOKED"]]
    for key in keys:
        if args.active and not store.key_is_active(key, now):
            continue
        rows.append([
            key.id,
            key.prefix + "…",
            key.name,
            names.get(key.account_id, key.account_id),
            _models_cell(key),
            _limits_cell(key),
            _time_cell(key.created_at),
            _time_cell(key.expires_at),
            _time_cell(key.revoked_at),
        ])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


async def _keys_revoke(database: Database, args: argparse.Namespace) -> int:
    ref: str = args.ref.strip()
    if ref.startswith(store.KEY_START) and len(ref) > store.KEY_PREFIX_LEN:
        shown = store.key_prefix(ref) + "…"  # never echo a whole key
    else:
        shown = ref
    async with database.session() as session:
        key = await store.find_key(session, ref)
        if key is None:
            raise _CommandError(f"no key has the id or prefix {shown}")
        already = key.revoked_at
        await store.revoke_key(session, key.id)
        await session.commit()
    if already is not None:
        print(f"Key {key.id} ({key.prefix}…) was already revoked at {_time_cell(already)}.")
    else:
        print(f"Revoked key {key.id} ({key.prefix}…) named {key.name!r}.")
        print(_cache_note(args, "the key"), file=sys.stderr)
    return 0


def _cache_note(args: argparse.Namespace, what: str) -> str:
    seconds = f"{args.settings.key_cache_seconds:g}"
    return (f"A running server that used {what} in the last {seconds} s (key_cache_seconds) "
            f"may accept it for up to {seconds} s more; revoking through the admin API "
            "applies at once on the server that receives it.")


async def _accounts_list(database: Database, args: argparse.Namespace) -> int:
    async with database.session() as session:
        accounts = await store.list_accounts(session)
        keys = await store.list_keys(session, include_revoked=False)
    now = datetime.now(UTC)
    active: dict[str, int] = {}
    for key in keys:
        if store.key_is_active(key, now):
            active[key.account_id] = active.get(key.account_id, 0) + 1
    rows = [["ID", "NAME", "EMAIL", "ADMIN", "DISABLED", "KEYS", "LIMITS", "CREATED"]]
    for account in accounts:
        rows.append([
            account.id, account.name, account.email or "-", "yes" if account.is_admin else "no",
            "yes" if account.disabled else "no", str(active.get(account.id, 0)),
            _limits_cell(account), _time_cell(account.created_at),
        ])
    _print_rows(rows)
    return 0


async def _accounts_set_disabled(database: Database, args: argparse.Namespace) -> int:
    async with database.session() as session:
        account = await store.find_account(session, args.account)
        if account is None:
            raise _CommandError(f"no account has the id, email or name {args.account!r}")
        was = account.disabled
        await store.update_account(session, account.id, disabled=args.disabled)
        await session.commit()
    state = "disabled" if args.disabled else "enabled"
    if was == args.disabled:
        print(f"The account {account.name!r} ({account.id}) was already {state}.")
        return 0
    print(f"The account {account.name!r} ({account.id}) is {state}.")
    if args.disabled:
        print(_cache_note(args, "one of its keys"), file=sys.stderr)
    return 0


async def _usage(database: Database, args: argparse.Namespace) -> int:
    async with database.session() as session:
        account_id = key_id = None
        if args.account is not None:
            account = await store.find_account(session, args.account)
            if account is None:
                raise _CommandError(f"no account has the id, email or name {args.account!r}")
            account_id = account.id
        if args.key is not None:
            key = await store.find_key(session, args.key)
            if key is None:
                raise _CommandError(f"no key has the id or prefix {args.key}")
            key_id = key.id
        summary = await store.usage_summary(session, account_id=account_id, key_id=key_id,
                                            since=args.since, until=args.until)
    if args.json:
        import json

        print(json.dumps({"object": "list", "data": [
            {**dataclasses.asdict(row), "total_tokens": row.prompt_tokens + row.completion_tokens}
            for row in summary]}, indent=2))
        return 0
    columns = ("requests", "succeeded", "failed", "cancelled", "rate_limited",
               "prompt_tokens", "cached_tokens", "completion_tokens")
    rows = [["DAY", "MODEL", "ENDPOINT", "REQUESTS", "OK", "FAILED", "CANCELLED", "LIMITED", "PROMPT",
             "CACHED", "COMPLETION", "TOTAL"]]
    totals = dict.fromkeys(columns, 0)
    for row in summary:
        values = [getattr(row, name) for name in columns]
        for name, value in zip(columns, values, strict=True):
            totals[name] += value
        rows.append([row.day, row.model, row.endpoint, *map(str, values),
                     str(row.prompt_tokens + row.completion_tokens)])
    if summary:
        rows.append(["total", "", "", *(str(totals[name]) for name in columns),
                     str(totals["prompt_tokens"] + totals["completion_tokens"])])
    _print_rows(rows)
    return 0


def _print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _models_cell(key: ApiKey) -> str:
    return ",".join(key.models) if key.models is not None else "all"


def _limits_cell(key: ApiKey | Account) -> str:
    limits = store.limits_of(key)
    parts = [
        f"{name}={value}"
        for name, value in (
            ("rpm", limits.rpm),
            ("tpm", limits.tpm),
            ("concurrent", limits.max_concurrent),
        )
        if value is not None
    ]
    if limits.quota_tokens is not None:
        parts.append(f"quota={limits.quota_tokens}/{limits.quota_period}")
    return " ".join(parts) or "none"


def _time_cell(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value is not None else "-"

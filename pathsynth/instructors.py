"""Instructor accounts and the audit log of instructor writes (issue 17).

Accounts are local: a name and an argon2id hash (``argon2-cffi``), made with ``pathsynth instructors add NAME``
and stored in the app's database (``instructors`` table, revision 0006). Names are stored in lower case, so
"Ana" and "ana" are one account. Hugging Face usernames (``PATHSYNTH_INSTRUCTORS`` on Spaces) and the shared
``PATHSYNTH_INSTRUCTOR_PASSWORD`` (signed in as ``LEGACY_ACCOUNT``) keep working beside them; see
``ui_helpers.authorize``.

Every instructor write adds an ``audit_log`` row in the write's own transaction (``record``): the gallery store,
assignments and the account functions here call it, so a write and its audit row commit together or not at all.
Bad input raises ``ValueError`` worded for the UI and the CLI; a wrong name or password ``PermissionError``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .settings import SHARED_PASSWORD_ACCOUNT
from .storage import AuditRow, Database, InstructorRow, now_stamp
from .text import clip_text

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256  # bounds the hashing work a request can ask for
LEGACY_ACCOUNT = SHARED_PASSWORD_ACCOUNT  # who PATHSYNTH_INSTRUCTOR_PASSWORD signs in as: not an account name
MAX_DETAIL_CHARS = 200
CLI_ACTOR = "cli"  # the audit log's name for account changes made with `pathsynth instructors`
WRONG = "Instructor account or password wrong."

_HASHER = PasswordHasher()  # argon2id with the library's defaults (RFC 9106); holds no per-user state
VERIFIED_TTL_S = 600.0  # a right password is re-checked with argon2 at most every 10 minutes per account
# password hash -> (keyed digest of the password that matched it, expiry). argon2 takes ~0.3 s by design, too slow
# for every request of a signed-in instructor; the digest's key lives only in this process, and a new password
# means a new hash, so a changed password is never served from here.
_VERIFIED: dict[str, tuple[bytes, float]] = {}
_DIGEST_KEY = os.urandom(32)


class AccountNotFoundError(ValueError):
    """No instructor account with that name."""


@dataclass
class Account:
    id: int
    username: str
    disabled: bool
    created_at: str


@dataclass
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    target_kind: str
    target_id: int | None
    detail: str


# ------------------------------------------------------------------------------------------ checking input

def clean_username(value) -> str:
    """An account name in its stored form (lower case); ``ValueError`` naming the rule otherwise."""
    name = value.strip().lower() if isinstance(value, str) else ""
    if not USERNAME.fullmatch(name):
        raise ValueError(f"Account names are 1 to 40 letters, digits, '.', '_' or '-', starting with a letter or "
                         f"digit; got {clip_text(value, 40)!r}.")
    if name == LEGACY_ACCOUNT:
        raise ValueError(f"{LEGACY_ACCOUNT!r} is the shared password's name; choose another account name.")
    return name


def check_password(value) -> str:
    """A new password: text of ``MIN_PASSWORD_CHARS`` to ``MAX_PASSWORD_CHARS`` characters."""
    if not isinstance(value, str) or not MIN_PASSWORD_CHARS <= len(value) <= MAX_PASSWORD_CHARS:
        raise ValueError(f"Passwords are {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long.")
    return value


def hash_password(password: str) -> str:
    """The argon2id hash of a new password (salted: two hashes of one password differ)."""
    return _HASHER.hash(check_password(password))


def password_ok(password_hash: str, password) -> bool:
    """Whether ``password`` matches the hash (argon2's verification, constant-time in the password)."""
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _digest(password: str) -> bytes:
    return hmac.new(_DIGEST_KEY, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def password_ok_cached(password_hash: str, password) -> bool:
    """``password_ok``, remembering a match for ``VERIFIED_TTL_S`` so signed-in requests stay fast."""
    entry = _VERIFIED.get(password_hash)
    if (entry and time.monotonic() < entry[1] and isinstance(password, str)
            and len(password) <= MAX_PASSWORD_CHARS and hmac.compare_digest(entry[0], _digest(password))):
        return True
    if not password_ok(password_hash, password):
        return False
    _VERIFIED[password_hash] = (_digest(password), time.monotonic() + VERIFIED_TTL_S)
    return True


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked against for unknown names, so they take as long to refuse as a wrong password."""
    return _HASHER.hash("not an account's password")


# ------------------------------------------------------------------------------------------------ accounts

def create_account(database: Database, username, password, *, actor: str = CLI_ACTOR) -> Account:
    """A new enabled account; ``ValueError`` when the name is taken (in any case) or the input is bad."""
    name, password_hash, now = clean_username(username), hash_password(password), now_stamp()
    with database.write() as db:
        try:
            with db.begin_nested():  # a savepoint: PostgreSQL aborts the whole transaction on a violation
                result = db.execute(insert(InstructorRow).values(username=name, password_hash=password_hash,
                                                                 disabled=False, created_at=now))
        except IntegrityError:
            raise ValueError(f"An instructor account named {name!r} already exists.") from None
        account_id = int(result.inserted_primary_key[0])
        record(db, actor, "create", "account", account_id, name)
    return Account(account_id, name, False, now)


def _account_id(db: Connection, username, lock: bool = False) -> tuple[int, str]:
    name = username.strip().lower() if isinstance(username, str) else ""
    query = select(InstructorRow.id).where(InstructorRow.username == name)
    account_id = db.scalar(query.with_for_update() if lock else query)
    if account_id is None:
        raise AccountNotFoundError(f"No instructor account named {clip_text(username, 40)!r}.")
    return int(account_id), name


def set_password(database: Database, username, password, *, actor: str = CLI_ACTOR) -> None:
    """Replace an account's password (the old one stops working at once)."""
    password_hash = hash_password(password)
    with database.write() as db:
        account_id, name = _account_id(db, username, lock=True)
        db.execute(update(InstructorRow).where(InstructorRow.id == account_id).values(password_hash=password_hash))
        record(db, actor, "password", "account", account_id, name)


def set_disabled(database: Database, username, disabled: bool = True, *, actor: str = CLI_ACTOR) -> None:
    """Disable an account (it can no longer sign in; what it made stays) or enable it again."""
    with database.write() as db:
        account_id, name = _account_id(db, username, lock=True)
        db.execute(update(InstructorRow).where(InstructorRow.id == account_id).values(disabled=bool(disabled)))
        record(db, actor, "disable" if disabled else "enable", "account", account_id, name)


def get_account(database: Database, username) -> Account:
    """One account by name (any case); ``AccountNotFoundError`` when there is none."""
    with database.read() as db:
        account_id, _ = _account_id(db, username)
        row = db.execute(select(InstructorRow.username, InstructorRow.disabled, InstructorRow.created_at)
                         .where(InstructorRow.id == account_id)).one()
    return Account(account_id, row.username, bool(row.disabled), row.created_at)


def list_accounts(database: Database) -> list[Account]:
    """Every account, by name (no hashes)."""
    with database.read() as db:
        rows = db.execute(select(InstructorRow.id, InstructorRow.username, InstructorRow.disabled,
                                 InstructorRow.created_at).order_by(InstructorRow.username)).all()
    return [Account(r.id, r.username, bool(r.disabled), r.created_at) for r in rows]


def accounts_exist(database: Database) -> bool:
    """Whether any enabled account can sign in (the app then shows the account login)."""
    with database.read() as db:
        return db.scalar(select(InstructorRow.id).where(InstructorRow.disabled.is_(False)).limit(1)) is not None


def authenticate(database: Database, username, password) -> str:
    """The account's name when ``password`` is right and the account enabled; ``PermissionError`` otherwise.

    Unknown names and wrong passwords get the same message and take as long; a disabled account is named as
    such only after its right password. A hash made with older argon2 parameters is replaced on success."""
    name = username.strip().lower() if isinstance(username, str) else ""
    with database.read() as db:
        row = db.execute(select(InstructorRow.id, InstructorRow.password_hash, InstructorRow.disabled)
                         .where(InstructorRow.username == name)).one_or_none()
    if row is None:
        password_ok(_dummy_hash(), password)
        raise PermissionError(WRONG)
    if not password_ok_cached(row.password_hash, password):
        raise PermissionError(WRONG)
    if row.disabled:
        raise PermissionError(f"The instructor account {name!r} is disabled.")
    if _HASHER.check_needs_rehash(row.password_hash):
        with database.write() as db:
            db.execute(update(InstructorRow).where(InstructorRow.id == row.id)
                       .values(password_hash=_HASHER.hash(password)))
    return name


# ----------------------------------------------------------------------------------------------- audit log

def record(db: Connection, actor: str, action: str, target_kind: str, target_id: int | None = None,
           detail="") -> None:
    """Add one audit row inside the caller's write transaction (so it commits with the write, or not at all)."""
    db.execute(insert(AuditRow).values(at=now_stamp(), actor=clip_text(actor, 100), action=action,
                                       target_kind=target_kind, target_id=target_id,
                                       detail=clip_text(detail, MAX_DETAIL_CHARS)))


def audit_log(database: Database, limit: int = 50, actor: str | None = None) -> list[AuditEntry]:
    """The newest ``limit`` audit rows, newest first (``actor``: only that person's, any case)."""
    query = select(*AuditRow.__table__.c).order_by(AuditRow.id.desc()).limit(int(limit))
    if actor:
        query = query.where(func.lower(AuditRow.actor) == actor.strip().lower())
    with database.read() as db:
        return [AuditEntry(**row._asdict()) for row in db.execute(query)]


__all__ = ["Account", "AccountNotFoundError", "AuditEntry", "CLI_ACTOR", "LEGACY_ACCOUNT", "accounts_exist",
           "audit_log", "authenticate", "check_password", "clean_username", "create_account", "get_account",
           "hash_password", "list_accounts", "password_ok", "record", "set_disabled", "set_password"]

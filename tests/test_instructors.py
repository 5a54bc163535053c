"""Several instructors (issue 17): accounts with argon2 hashes, the `pathsynth instructors` CLI, the app's account
login, the audit log of every instructor write, private galleries and migration 0006.

Store tests run on SQLite and on PostgreSQL (``storage_url`` in tests/conftest.py)."""

import io
import json
import secrets
from types import SimpleNamespace

import numpy as np
import pytest
from alembic import command
from argon2 import PasswordHasher
from PIL import Image
from sqlalchemy import inspect, text, update
from sqlalchemy.exc import IntegrityError

from pathsynth import assignments as A
from pathsynth import cli, exports, instructors, storage
from pathsynth.app import assignments as assignment_tab
from pathsynth.app import galleries
from pathsynth.gallery import (DB_NAME, AmbiguousGalleryError, GalleryItemInput, GalleryNotFoundError,
                               GalleryStore)
from pathsynth.settings import Settings
from tiny_models import tiny_classifier

SHARED = "shared-secret"  # PATHSYNTH_INSTRUCTOR_PASSWORD in the app tests
ANA, BOB = "ana-password-1", "bob-password-2"


def items(n=2):
    return [GalleryItemInput(np.full((28, 28, 3), 40 * k, np.uint8), caption=f"c{k}", tissue=k) for k in range(n)]


def request():
    """A request from a fresh address: the password backoff is per account and address, for the whole process."""
    return SimpleNamespace(client=SimpleNamespace(host=f"test-{secrets.token_hex(4)}"))


@pytest.fixture
def store(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as s:
        yield s


@pytest.fixture
def services(tmp_path):
    """The app's services for handler tests: the shared password and two accounts, ana and bob."""
    settings = Settings.from_env({"PATHSYNTH_HOME": str(tmp_path), "PATHSYNTH_INSTRUCTOR_PASSWORD": SHARED})
    store = GalleryStore(tmp_path)
    instructors.create_account(store.database, "Ana", ANA)
    instructors.create_account(store.database, "bob", BOB)
    yield SimpleNamespace(settings=settings, store=store, classifier=tiny_classifier(), pool=None)
    store.close()


def actions(database, actor=None) -> list[tuple]:
    """(actor, action, target kind) of the audit log, oldest first."""
    return [(e.actor, e.action, e.target_kind) for e in reversed(instructors.audit_log(database, 1000, actor))]


# ------------------------------------------------------------------------------------------------ hashing

def test_a_password_is_stored_as_a_salted_argon2_hash():
    first, second = instructors.hash_password(ANA), instructors.hash_password(ANA)
    assert first.startswith("$argon2id$") and ANA not in first and first != second  # salted
    assert instructors.password_ok(first, ANA) and instructors.password_ok(second, ANA)
    for wrong in ("ana-password-2", "", None, 12345678, ANA.upper()):
        assert not instructors.password_ok(first, wrong)
    assert not instructors.password_ok("not a hash", ANA)


@pytest.mark.parametrize("password", ["short", "x" * 257, None, b"bytes-password"])
def test_new_passwords_must_be_8_to_256_characters(password):
    with pytest.raises(ValueError, match="8 to 256 characters"):
        instructors.hash_password(password)


@pytest.mark.parametrize("name, stored", [("Ana", "ana"), ("  dr.who_2-b ", "dr.who_2-b"), ("X" * 40, "x" * 40)])
def test_account_names_are_stored_in_lower_case(name, stored):
    assert instructors.clean_username(name) == stored


@pytest.mark.parametrize("name, message", [("", "1 to 40"), ("a b", "1 to 40"), ("-ana", "starting with"),
                                           ("x" * 41, "1 to 40"), (None, "1 to 40"), ("Instructor", "shared")])
def test_bad_account_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        instructors.clean_username(name)


# ----------------------------------------------------------------------------------------------- accounts

def test_accounts_sign_in_with_their_own_password_only(store):
    db = store.database
    assert not instructors.accounts_exist(db)
    account = instructors.create_account(db, "Ana", ANA)
    assert (account.username, account.disabled) == ("ana", False) and instructors.accounts_exist(db)
    with pytest.raises(ValueError, match="already exists"):
        instructors.create_account(db, "ANA", BOB)  # unique without regard to case
    assert instructors.authenticate(db, " ANA ", ANA) == "ana"
    for name, password in (("ana", BOB), ("ana", ""), ("nobody", ANA)):  # one message: no name is confirmed
        with pytest.raises(PermissionError, match="^Instructor account or password wrong"):
            instructors.authenticate(db, name, password)
    with db.read() as connection:
        stored = connection.execute(text("SELECT password_hash FROM instructors")).scalar()
    assert stored.startswith("$argon2id$") and ANA not in stored


def test_disabled_accounts_are_refused_and_passwords_can_change(store):
    db = store.database
    instructors.create_account(db, "ana", ANA)
    instructors.set_disabled(db, "Ana")
    assert not instructors.accounts_exist(db) and instructors.list_accounts(db)[0].disabled
    with pytest.raises(PermissionError, match="disabled"):
        instructors.authenticate(db, "ana", ANA)
    with pytest.raises(PermissionError, match="wrong"):  # "disabled" is said only after the right password
        instructors.authenticate(db, "ana", BOB)
    instructors.set_disabled(db, "ana", False)
    instructors.set_password(db, "ana", BOB)
    assert instructors.authenticate(db, "ana", BOB) == "ana"
    with pytest.raises(PermissionError):
        instructors.authenticate(db, "ana", ANA)  # the old password stops working
    with pytest.raises(instructors.AccountNotFoundError, match="No instructor account named 'zed'"):
        instructors.set_password(db, "zed", BOB)
    assert actions(db) == [("cli", a, "account") for a in ("create", "disable", "enable", "password")]


def test_an_old_hash_is_upgraded_when_its_owner_signs_in(store):
    db = store.database
    instructors.create_account(db, "ana", ANA)
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(ANA)
    with db.write() as connection:
        connection.execute(update(storage.InstructorRow).values(password_hash=weak))
    assert instructors.authenticate(db, "ana", ANA) == "ana"
    with db.read() as connection:
        rehashed = connection.execute(text("SELECT password_hash FROM instructors")).scalar()
    assert rehashed != weak and instructors.password_ok(rehashed, ANA)


def test_the_database_keeps_names_in_lower_case(store):
    with pytest.raises(IntegrityError), store.database.write() as connection:
        connection.execute(text("INSERT INTO instructors (username, password_hash, created_at) "
                                "VALUES ('Ana', 'x', '2026-12-08T00:00:00.000+00:00')"))


# ----------------------------------------------------------------------------------------------------- CLI

@pytest.fixture
def cli_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHSYNTH_HOME", str(tmp_path))
    monkeypatch.delenv("PATHSYNTH_DATABASE_URL", raising=False)
    return tmp_path


def run_cli(monkeypatch, capsys, *args, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(["instructors", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_adds_lists_disables_and_changes_passwords(cli_home, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, "add", "Ana", "--password-stdin", stdin=ANA + "\n")[0] == 0
    code, out, _ = run_cli(monkeypatch, capsys, "list", "--json")
    accounts = json.loads(out.strip().splitlines()[-1])["accounts"]
    assert code == 0 and [(a["username"], a["disabled"]) for a in accounts] == [("ana", False)]
    assert run_cli(monkeypatch, capsys, "disable", "ANA")[0] == 0
    assert "disabled" in run_cli(monkeypatch, capsys, "list")[1]
    assert run_cli(monkeypatch, capsys, "enable", "ana")[0] == 0
    assert run_cli(monkeypatch, capsys, "passwd", "ana", "--password-stdin", stdin=BOB + "\r\n")[0] == 0
    with GalleryStore(cli_home) as store:
        assert instructors.authenticate(store.database, "ana", BOB) == "ana"
        assert not instructors.list_accounts(store.database)[0].disabled
    code, out, _ = run_cli(monkeypatch, capsys, "audit", "--limit", "2", "--json")
    entries = json.loads(out.strip().splitlines()[-1])["entries"]
    assert code == 0 and [(e["actor"], e["action"], e["detail"]) for e in entries] == [
        ("cli", "password", "ana"), ("cli", "enable", "ana")]


def test_cli_asks_for_the_password_twice(cli_home, monkeypatch, capsys):
    typed = iter([ANA, ANA + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    code, _, err = run_cli(monkeypatch, capsys, "add", "ana")
    assert code == 2 and "differ" in err
    typed = iter([ANA, ANA])
    assert run_cli(monkeypatch, capsys, "add", "ana")[0] == 0
    with GalleryStore(cli_home) as store:
        assert instructors.authenticate(store.database, "ana", ANA) == "ana"


@pytest.mark.parametrize("args, stdin, reason", [
    (("add", "bad name", "--password-stdin"), ANA, "Account names are"),
    (("add", "ana", "--password-stdin"), "short", "8 to 256 characters"),
    (("add", "instructor", "--password-stdin"), ANA, "shared password's name"),
    (("disable", "nobody"), "", "No instructor account named 'nobody'"),
    (("passwd", "nobody", "--password-stdin"), ANA, "No instructor account named"),
    (("audit", "--limit", "0"), "", "expected a whole number from 1"),
])
def test_cli_refuses_bad_arguments_with_one_line_and_exit_2(cli_home, monkeypatch, capsys, args, stdin, reason):
    try:
        code, _, err = run_cli(monkeypatch, capsys, *args, stdin=stdin)
    except SystemExit as exit:  # argparse's own checks exit from parse_args
        code, err = exit.code, capsys.readouterr().err
    assert code == 2 and reason in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_second_account_of_the_same_name(cli_home, monkeypatch, capsys):
    run_cli(monkeypatch, capsys, "add", "ana", "--password-stdin", stdin=ANA)
    code, _, err = run_cli(monkeypatch, capsys, "add", "Ana", "--password-stdin", stdin=BOB)
    assert code == 2 and "already exists" in err


# --------------------------------------------------------------------------------------------- app login

def test_the_app_signs_accounts_in_and_keeps_the_shared_password(services):
    sign_in = galleries.instructor_sign_in
    assert "Signed in as **ana**" in sign_in(services, ANA, None, request(), "Ana")[0]
    assert "Signed in as **instructor**" in sign_in(services, SHARED, None, request(), "")[0]  # as before
    assert sign_in(services, BOB, None, request(), "ana")[0] == "⚠️ Instructor account or password wrong\\."
    assert "wrong" in sign_in(services, ANA, None, request(), "nobody")[0]
    assert "password" in sign_in(services, ANA, None, request())[0]  # an account's password is not the shared one
    instructors.set_disabled(services.store.database, "bob")
    message, tools = sign_in(services, BOB, None, request(), "bob")
    assert "disabled" in message and tools == galleries.gr.skip()


def test_wrong_passwords_slow_down_one_account_not_the_others(services):
    address = request()
    for _ in range(galleries._LIMITER.free_failures + 1):
        galleries.instructor_sign_in(services, "guess-guess", None, address, "ana")
    assert "Too many wrong passwords" in galleries.instructor_sign_in(services, ANA, None, address, "ana")[0]
    assert "Signed in as **bob**" in galleries.instructor_sign_in(services, BOB, None, address, "bob")[0]


def test_the_account_login_is_offered_once_an_account_exists(tmp_path):
    settings = Settings.from_env({"PATHSYNTH_HOME": str(tmp_path)})  # no shared password
    with GalleryStore(tmp_path) as store:
        services = SimpleNamespace(settings=settings, store=store)
        assert "disabled" in galleries.instructor_sign_in(services, ANA, None, request(), "ana")[0]
        assert not galleries.instructor_config(services).enabled
        instructors.create_account(store.database, "ana", ANA)
        assert galleries.instructor_config(services).enabled  # at once: no restart needed to sign in
        assert "account name" in galleries.instructor_sign_in(services, "", None, request(), "")[0]
        assert "Signed in as **ana**" in galleries.instructor_sign_in(services, ANA, None, request(), "ana")[0]


# --------------------------------------------------------------------------------------------- audit log

def batch(n=2):
    return [SimpleNamespace(image=np.full((28, 28, 3), 50 * k, np.uint8), tissue=k, seed=k, verified=True,
                            attempts=1, predicted=k, confidence=0.9, realism=0.5, probabilities=[0.1] * 9)
            for k in range(n)]


def png_file(path) -> str:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (56, 56, 3), np.uint8)).save(path)
    return str(path)


def test_every_instructor_write_is_audited_under_the_signed_in_name(services, tmp_path):
    ana, bob = (ANA, None, request(), "ana"), (BOB, None, request(), "bob")

    def as_(who, handler, *args):
        password, profile, req, account = who
        return handler(services, password, *args, profile, req, account)

    saved = as_(ana, galleries.gallery_save, "Week 1", "", None, batch())[2]
    as_(bob, galleries.gallery_add, "Week 1", None, batch(1))
    as_(ana, galleries.gallery_caption, "Week 1", 1, "a new caption")
    as_(bob, galleries.gallery_rename, "Week 1", "Week one")
    as_(ana, galleries.gallery_visibility, "Week one", "private")
    as_(ana, galleries.gallery_upload, "Week one", [png_file(tmp_path / "a.png")], "Mucus", None)
    (tmp_path / "export.zip").write_bytes(exports.export_zip(services.store.get_gallery("Week one", viewer="ana")))
    as_(bob, galleries.gallery_import, str(tmp_path / "export.zip"), "Copy")
    code = assignment_tab.assignment_create(services, ANA, "Quiz", "exam", "", "Week one", None, 1, "", None,
                                            request(), None, "ana")[1]["code"]  # (progress before the account)
    as_(bob, galleries.gallery_delete, "Copy", True)
    item = services.store.get_gallery("Week one", viewer="ana").items[0].id
    services.store.remove_item(item, actor="ana")
    services.store.set_description("Week one", "about colon", actor="ana")
    galleries.gallery_save(services, SHARED, "Shared one", "", None, batch(1), None, request())  # shared password
    assert actions(services.store.database)[2:] == [  # after the two accounts the fixture made
        ("ana", "create", "gallery"), ("bob", "add_items", "gallery"), ("ana", "caption", "item"),
        ("bob", "rename", "gallery"), ("ana", "visibility", "gallery"), ("ana", "upload", "gallery"),
        ("bob", "import", "gallery"), ("ana", "create", "assignment"), ("bob", "delete", "gallery"),
        ("ana", "remove_item", "item"), ("ana", "describe", "gallery"), ("instructor", "create", "gallery")]
    log = {(e.action, e.target_kind): e for e in instructors.audit_log(services.store.database, 100)}
    assert log["rename", "gallery"].detail == "Week 1 -> Week one" and log["rename", "gallery"].target_id == saved["id"]
    assert log["create", "assignment"].detail.startswith(code) and log["delete", "gallery"].detail == "Copy"
    assert services.store.get_gallery("Week one", viewer="ana").created_by == "ana"


def test_a_refused_write_leaves_no_audit_row(services):
    before = actions(services.store.database)
    message = galleries.gallery_rename(services, BOB, "no such gallery", "x", None, request(), "bob")[0]
    assert message.startswith("⚠️") and actions(services.store.database) == before


# -------------------------------------------------------------------------------------- private galleries

def test_a_private_gallery_is_its_owners_alone(store):
    gallery_id = store.create_gallery("Secret", created_by="Ana", items=items(), visibility="private")
    store.create_gallery("Open", created_by="bob", items=items(1))
    assert [g.name for g in store.list_galleries()] == ["Open"]  # learners
    assert [g.name for g in store.list_galleries("bob")] == ["Open"]
    assert [(g.name, g.visibility) for g in store.list_galleries("ANA")] == [("Secret", "private"), ("Open", "shared")]
    assert len(store.get_gallery("secret", viewer="ana").items) == 2
    item = store.get_gallery(gallery_id, viewer="ana").items[0].id
    for attempt in (lambda: store.get_gallery("Secret"), lambda: store.get_gallery(gallery_id, viewer="bob"),
                    lambda: store.rename_gallery("Secret", "Mine", actor="bob"),
                    lambda: store.add_items("Secret", items(1), actor="bob"),
                    lambda: store.update_caption(item, "x", actor="bob"),
                    lambda: store.remove_item(item, actor="bob"),
                    lambda: store.delete_gallery(gallery_id, actor="bob")):
        with pytest.raises(GalleryNotFoundError):
            attempt()
    with pytest.raises(PermissionError, match=r"Only its owner \(bob\)"):
        store.set_visibility("Open", "private", actor="ana")  # another's shared gallery: its owner decides
    store.set_visibility("Secret", "shared", actor="ana")
    assert [g.name for g in store.list_galleries()] == ["Secret", "Open"]
    with pytest.raises(ValueError, match="needs its owner"):
        store.create_gallery("Nobody's", visibility="private")


def test_an_assignment_from_a_private_gallery_still_opens_for_learners(store):
    store.create_gallery("Secret", created_by="ana", items=items(3), visibility="private")
    assignment = A.create_from_gallery(store.database, store.get_gallery("Secret", viewer="ana"), created_by="ana")
    opened = A.open_assignment(store.database, assignment.code)  # a learner with the code
    assert len(opened.questions) == 3 and opened.created_by == "ana"


def test_learners_and_other_instructors_do_not_see_a_private_gallery_in_the_app(services):
    galleries.gallery_save(services, ANA, "Secret", "", None, batch(), None, request(), "ana", "private")
    galleries.gallery_save(services, BOB, "Open", "", None, batch(1), None, request(), "bob")
    listed = lambda *who: [g["name"] for g in galleries.gallery_list(services, *who)[1]]  # noqa: E731
    assert listed() == listed(BOB, None, request(), "bob") == ["Open"]
    assert listed(ANA, None, request(), "ana") == ["Secret", "Open"]
    assert listed("wrong-password", None, request(), "ana") == ["Open"]  # wrong credentials: a learner's view
    for who in ((), (BOB, None, request(), "bob")):
        assert "no gallery named 'Secret'" in galleries.gallery_get(services, "Secret", *who)[1]
        assert "no gallery named" in galleries.gallery_quiz(services, "Secret", *who)[-1]
        assert galleries.gallery_download_zip(services, "Secret", *who)[0] is None
    refused = assignment_tab.assignment_create(services, BOB, "T", "exam", "", "Secret", None, 1, "", None,
                                               request(), None, "bob")[0]
    assert refused.startswith("⚠️") and "no gallery named" in refused
    assert "private: only you see it" in galleries.gallery_get(services, "Secret", ANA, None, request(), "ana")[1]
    assert galleries.gallery_quiz(services, "Secret", ANA, None, request(), "ana")[0].total == 2
    message = galleries.gallery_visibility(services, BOB, "Secret", "shared", None, request(), "bob")[0]
    assert message.startswith("⚠️") and listed() == ["Open"]


def test_another_instructors_private_gallery_never_blocks_a_name(store):
    """Names clash only with galleries the writer can see, so "already exists" reveals nothing private."""
    secret = store.create_gallery("Week 1", created_by="ana", items=items(1), visibility="private")
    store.create_gallery("WEEK 1", created_by="bob", visibility="private")  # bob cannot see ana's
    other = store.create_gallery("Other", created_by="carol")
    assert store.rename_gallery(other, "week 1", actor="carol") == other  # a shared name, beside two private ones
    for refused in (lambda: store.create_gallery("week 1", created_by="ana"),  # ana sees her own and carol's
                    lambda: store.create_gallery("Week 1", created_by="dan"),  # everyone sees carol's
                    lambda: store.set_visibility(secret, "shared", actor="ana")):  # shared names are unique
        with pytest.raises(ValueError, match="already exists"):
            refused()
    with pytest.raises(ValueError, match=r"already exists \(your private gallery\)"):
        store.create_gallery("week 1", created_by="bob", visibility="private")
    assert [(g.id, g.visibility) for g in store.list_galleries()] == [(other, "shared")]
    assert store.get_gallery("Week 1").id == other  # learners: the shared one, the only one they see


def test_a_name_two_visible_galleries_share_is_ambiguous_and_ids_decide(store):
    secret = store.create_gallery("Week 1", created_by="ana", items=items(1), visibility="private")
    shared = store.create_gallery("Week 1", created_by="bob", items=items(2))  # bob cannot know ana's
    with pytest.raises(AmbiguousGalleryError) as caught:
        store.get_gallery("week 1", viewer="Ana")
    assert str(caught.value) == (f"2 galleries named 'week 1' are open to you: id {secret} (private, yours), "
                                 f"id {shared} (shared, by bob). Choose one by its id (the gallery list tells them "
                                 "apart), or rename yours.")
    for write in (lambda: store.add_items("Week 1", items(1), actor="ana"),
                  lambda: store.delete_gallery("Week 1", actor="ana")):
        with pytest.raises(AmbiguousGalleryError):
            write()
    assert len(store.get_gallery(secret, viewer="ana").items) == 1  # by id: no doubt, and nothing was written
    assert store.get_gallery("Week 1", viewer="bob").id == shared == store.get_gallery("Week 1").id
    store.rename_gallery(secret, "Week 1 (mine)", actor="ana")
    assert store.get_gallery("week 1", viewer="ana").id == shared


def test_only_the_owner_creates_a_private_gallery(store):
    with pytest.raises(ValueError, match="Only its owner"):
        store.create_gallery("Theirs", created_by="ana", visibility="private", actor="bob")
    assert store.list_galleries("ana") == []


def test_the_app_neither_leaks_nor_guesses_between_same_named_galleries(services, tmp_path):
    galleries.gallery_save(services, ANA, "Week 1", "", None, batch(1), None, request(), "ana", "private")
    saved = galleries.gallery_save(services, BOB, "week 1", "", None, batch(2), None, request(), "bob")
    assert saved[0].startswith("✅ Saved")  # not "already exists": ana's gallery is hers alone
    again = galleries.gallery_save(services, BOB, "Week 1", "", None, batch(1), None, request(), "bob")[0]
    assert again.startswith("⚠️") and "already exists" in again  # bob's own gallery: his to know about
    ana = (ANA, None, request(), "ana")
    choices = galleries.gallery_list(services, *ana)[0]["choices"]
    assert [label for label, _ in choices] == ["Week 1 (1 image, private)", "week 1 (2 images, by bob)"]
    quiz = galleries.gallery_quiz(services, "week 1", *ana)[-1]
    assert quiz.startswith("⚠️") and "2 galleries named" in quiz and "Choose one by its id" in quiz
    assert galleries.gallery_quiz(services, choices[1][1], *ana)[0].total == 2  # the dropdown sends ids
    created = assignment_tab.assignment_create(services, ANA, "T", "exam", "", "Week 1", None, 1, "", None,
                                               request(), None, "ana")[0]
    assert created.startswith("⚠️") and "Choose one by its id" in created
    listed = assignment_tab.assignment_galleries(services, *ana[:1], None, *ana[1:])["choices"]  # the form's list
    assert [label for label, _ in listed[1:]] == ["Week 1 (private, yours; 1 image)",
                                                  "week 1 (shared, by bob; 2 images)"]
    bobs = assignment_tab.assignment_create(services, ANA, "", "exam", "", listed[2][1], None, 1, "", None,
                                            request(), None, "ana")[1]
    assert bobs["title"] == "week 1" and bobs["questions"] == 2  # the id picks bob's, never a guess
    bob = (BOB, None, request(), "bob")
    assert [label for label, _ in assignment_tab.assignment_galleries(services, *bob[:1], None, *bob[1:])["choices"]
            ][1:] == ["week 1 (shared, yours; 2 images)"]  # ana's private gallery is not on bob's list
    (tmp_path / "bob.zip").write_bytes(exports.export_zip(services.store.get_gallery("week 1")))
    imported = galleries.gallery_import(services, ANA, str(tmp_path / "bob.zip"), "", None, request(), "ana")[0]
    assert imported.startswith("⚠️") and "already exists" in imported  # a shared name: everyone sees it
    renamed = galleries.gallery_import(services, BOB, str(tmp_path / "bob.zip"), "Week 2", None, request(), "bob")
    assert renamed[0].startswith("✅ Imported")
    moved = galleries.gallery_rename(services, BOB, renamed[1]["value"], "WEEK 1 ", None, request(), "bob")[0]
    assert moved.startswith("⚠️") and "already exists" in moved


# ------------------------------------------------------------------------------------------ migration 0006

def test_a_database_at_revision_0005_is_upgraded_to_0006(tmp_path, storage_url):
    url = storage_url or storage.sqlite_url(tmp_path / DB_NAME)
    database = storage.Database(url)
    with database.write() as connection:  # the schema and a gallery as the 0005 release left them
        command.upgrade(storage.alembic_config(connection), "0005")
        connection.execute(text("INSERT INTO galleries (name, description, created_by, created_at, updated_at) "
                                "VALUES ('Week 1', '', 'instructor', '2026-12-01T08:00:00.000+00:00', "
                                "'2026-12-01T08:00:00.000+00:00')"))
    database.dispose()
    with GalleryStore(tmp_path, database_url=storage_url) as store:  # opening upgrades to head
        with store.database.read() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() >= "0006"
            assert {"instructors", "audit_log"} <= set(inspect(connection).get_table_names())
        assert [(g.name, g.visibility) for g in store.list_galleries()] == [("Week 1", "shared")]  # as before
        instructors.create_account(store.database, "ana", ANA)
        store.rename_gallery("Week 1", "Week one", actor="ana")
        assert actions(store.database) == [("cli", "create", "account"), ("ana", "rename", "gallery")]
        with storage.migrating(store.database) as connection:  # and back down cleanly, keeping the galleries
            command.downgrade(storage.alembic_config(connection), "0005")
            assert not {"instructors", "audit_log"} & set(inspect(connection).get_table_names())
            assert "visibility" not in {c["name"] for c in inspect(connection).get_columns("galleries")}
            assert connection.execute(text("SELECT name FROM galleries")).scalar() == "Week one"

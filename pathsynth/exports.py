"""A gallery out of PathSynth and back: a ZIP archive (lossless), an Anki deck and a printable handout.

* :func:`export_zip` / :func:`import_zip`: ``images/NNN_ABBR.png`` (full resolution, lossless), ``gallery.json``
  (everything: the authority on import) and ``metadata.csv`` (the same facts for a spreadsheet). Importing an
  export into another store gives the same gallery: name, description, creator, times, and per item the pixels,
  caption, tissue, provenance, seed, verification figures and every ``meta`` field, in the same order.
* :func:`export_anki`: an ``.apkg`` deck (genanki), the image on the front, the tissue and the catalogue's
  teaching text on the back. The model id is fixed, the deck id comes from what never changes about the gallery
  (its id, owner and creation time: not its name, which two instructors may share and an owner may change) and
  note ids from the deck and the image bytes, so re-importing an updated export into Anki updates the cards
  instead of duplicating them, and two instructors' galleries of one name stay two decks (their deck names say
  whose they are too: Anki also matches decks by name).
* :func:`export_handout`: one self-contained HTML page to print (images as data URIs, no external requests).

All user text (names, captions, descriptions) is escaped in HTML and guarded against spreadsheet formulas in CSV.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import sqlite3
import tempfile
import zipfile
from datetime import datetime, timezone

from .gallery import Gallery, GalleryItemInput, instructor_caption
from .images import encode_png
from .domains import DEFAULT_DOMAIN, get_domain
from .uploads import UploadedFile, UploadError, decode_image, zip_members

FORMAT = "pathsynth-gallery"
FORMAT_VERSION = 1
GALLERY_JSON = "gallery.json"
METADATA_CSV = "metadata.csv"
MAX_JSON_BYTES = 20 * 2**20
PROVENANCE = {"generated": "generated", "real": "real", "uploaded": "instructor-uploaded"}  # source -> shown
CSV_COLUMNS = ["file", "number", "tissue", "tissue_name", "provenance", "seed", "caption", "verified",
               "predicted", "confidence", "realism", "attempts", "created_at", "sha256"]
VERIFICATION_KEYS = ("verified", "predicted", "confidence", "realism", "attempts", "backend")
ANKI_MODEL_ID = 1_607_281_417  # fixed forever: Anki matches note types by id
ANKI_DECK_BASE = 1_700_000_000


def image_name(number: int, tissue: int, domain=DEFAULT_DOMAIN) -> str:
    return f"images/{number:03d}_{get_domain(domain).classes[tissue].abbreviation}.png"


def _verification(meta: dict) -> dict:
    """The verification figures of an item: the generator's checks, or the classifier's opinion of an upload."""
    figures = {key: meta[key] for key in VERIFICATION_KEYS if key in meta}
    opinion = meta.get("classifier")
    if isinstance(opinion, dict):
        figures.setdefault("predicted", opinion.get("predicted"))
        figures.setdefault("confidence", opinion.get("confidence"))
    return figures


def gallery_record(gallery: Gallery, pngs: list[bytes]) -> dict:
    """What ``gallery.json`` holds."""
    items, classes = [], get_domain(gallery.domain).classes
    for number, (item, png) in enumerate(zip(gallery.items, pngs), start=1):
        items.append({"file": image_name(number, item.tissue, gallery.domain), "sha256": hashlib.sha256(png).hexdigest(),
                      "tissue": classes[item.tissue].label, "tissue_name": classes[item.tissue].display_name,
                      "provenance": PROVENANCE.get(item.source, item.source), "source": item.source,
                      "seed": item.seed, "caption": item.caption, "verification": _verification(item.meta),
                      "meta": item.meta, "created_at": item.created_at})
    return {"format": FORMAT, "version": FORMAT_VERSION,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "gallery": {"name": gallery.name, "description": gallery.description, "created_by": gallery.created_by,
                        "created_at": gallery.created_at, "updated_at": gallery.updated_at, "domain": gallery.domain},
            "items": items}


def csv_cell(value) -> str:
    """A spreadsheet cell that never runs as a formula (a leading ' for =, +, -, @, tab, CR)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def metadata_csv(record: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    labels = get_domain(record["gallery"].get("domain")).labels
    for number, item in enumerate(record["items"], start=1):
        figures = item["verification"]
        predicted = figures.get("predicted")
        row = {**item, "number": number, "verified": figures.get("verified"),
               "predicted": labels[predicted] if isinstance(predicted, int) and 0 <= predicted < len(labels) else "",
               "confidence": figures.get("confidence"), "realism": figures.get("realism"),
               "attempts": figures.get("attempts")}
        writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
    return buffer.getvalue()


def export_zip(gallery: Gallery) -> bytes:
    """The gallery as a ZIP: PNGs, ``gallery.json`` and ``metadata.csv`` (see the module docstring)."""
    pngs = [encode_png(item.image) for item in gallery.items]
    record = gallery_record(gallery, pngs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(GALLERY_JSON, json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False))
        archive.writestr(METADATA_CSV, metadata_csv(record))
        for item, png in zip(record["items"], pngs):
            archive.writestr(zipfile.ZipInfo(item["file"], date_time=(1980, 1, 1, 0, 0, 0)), png,
                             zipfile.ZIP_STORED)  # PNGs are compressed already
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ import

def read_archive(data: bytes, name: str = "the ZIP") -> tuple[dict, dict[str, bytes]]:
    """``gallery.json`` and the members of an exported ZIP, within the upload limits."""
    members = zip_members(data, name)
    raw = members.get(GALLERY_JSON)
    if raw is None:
        raise UploadError(f"{name}: no {GALLERY_JSON}; is this a PathSynth gallery export?")
    if len(raw) > MAX_JSON_BYTES:
        raise UploadError(f"{name}: {GALLERY_JSON} is too large")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UploadError(f"{name}: {GALLERY_JSON} is not valid JSON") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UploadError(f"{name}: {GALLERY_JSON} is not a PathSynth gallery export")
    if record.get("version") != FORMAT_VERSION:
        raise UploadError(f"{name}: export format version {str(record.get('version'))[:10]!r} is not supported "
                          f"(this PathSynth reads version {FORMAT_VERSION})")
    if not isinstance(record.get("gallery"), dict) or not isinstance(record.get("items"), list):
        raise UploadError(f"{name}: {GALLERY_JSON} lacks its gallery or items")
    return record, members


def _import_item(number: int, item, members: dict[str, bytes], domain=DEFAULT_DOMAIN) -> GalleryItemInput:
    if not isinstance(item, dict):
        raise UploadError(f"item {number} of {GALLERY_JSON} is not an object")
    png = members.get(item.get("file")) if isinstance(item.get("file"), str) else None
    if png is None:  # looked up as a key only: a name never becomes a path
        raise UploadError(f"item {number}: its image {str(item.get('file'))[:60]!r} is missing from the ZIP")
    if hashlib.sha256(png).hexdigest() != item.get("sha256"):
        raise UploadError(f"item {number}: the image does not match its checksum (damaged or edited)")
    pixels = decode_image(UploadedFile(f"item {number}", png), min_side=1, alpha=False)
    catalogue = get_domain(domain)
    try:
        tissue = catalogue.class_index(item.get("tissue"))
    except (KeyError, ValueError, TypeError):
        raise UploadError(f"item {number}: unknown {catalogue.class_noun} {str(item.get('tissue'))[:40]!r}") from None
    return GalleryItemInput(image=pixels, caption=item.get("caption", ""), tissue=tissue, seed=item.get("seed"),
                            source=item.get("source"), meta=item.get("meta") or {},
                            created_at=item.get("created_at"))


def import_zip(store, data: bytes, name: str | None = None, created_by: str | None = None,
               file_name: str = "the ZIP", *, actor: str | None = None, visibility: str = "shared") -> int:
    """A new gallery from an exported ZIP (all or nothing); returns its id. ``name``/``created_by`` replace the
    exported ones when given (e.g. the name is taken in this store). The caller authorises; the audit log names
    ``actor`` (default: the gallery's creator) as the importer."""
    record, members = read_archive(data, file_name)
    info = record["gallery"]
    try:
        domain = get_domain(info.get("domain")).flag  # ZIPs from before domains are histology
    except ValueError as error:
        raise UploadError(f"{file_name}: {error}") from None
    items = [_import_item(number, item, members, domain) for number, item in enumerate(record["items"], start=1)]
    try:
        return store.create_gallery(name or info.get("name"), info.get("description", ""),
                                    created_by if created_by is not None else info.get("created_by", ""), items,
                                    created_at=info.get("created_at"), updated_at=info.get("updated_at"),
                                    visibility=visibility, actor=actor, action="import", domain=domain)
    except UploadError:
        raise
    except ValueError as error:  # the store's validation, e.g. a name already taken: say which file
        raise UploadError(f"{file_name}: {error}") from None


# -------------------------------------------------------------------------------------------------- Anki

ANKI_CSS = """.card { font-family: sans-serif; text-align: center; background: #fff; color: #222; }
img { width: 280px; image-rendering: pixelated; }
.tissue { font-size: 1.4em; font-weight: bold; margin: .6em 0; }
.features, .caption { text-align: left; max-width: 32em; margin: .5em auto; }
.caption { color: #555; font-style: italic; }"""


def _anki_model():
    import genanki

    fields = [{"name": "Image"}, {"name": "Tissue"}, {"name": "Features"}, {"name": "Caption"},
              {"name": "Provenance"}]
    back = ('{{FrontSide}}<hr id="answer"><div class="tissue">{{Tissue}}</div>'
            '<div class="features">{{Features}}</div>{{#Caption}}<div class="caption">{{Caption}}</div>{{/Caption}}'
            '<div class="caption">{{Provenance}}</div>')
    template = {"name": "Tile to tissue", "qfmt": "{{Image}}<div>Which tissue is this?</div>", "afmt": back}
    return genanki.Model(ANKI_MODEL_ID, "PathSynth tissue tile", fields=fields, templates=[template], css=ANKI_CSS)


def anki_deck_id(gallery: Gallery) -> int:
    """The gallery's deck id: the same on every export of this gallery (renamed or not), different for another
    gallery of the same name (another owner's, or another PathSynth's gallery with the same id)."""
    owner = (gallery.created_by or "").strip().casefold()
    key = "\x1f".join(["pathsynth-deck", str(gallery.id), owner, gallery.created_at or ""])
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return ANKI_DECK_BASE + int.from_bytes(digest[:4], "big") % 10**8


def anki_deck_name(gallery: Gallery) -> str:
    """"PathSynth::<name> (<owner>)": Anki files an imported deck under a deck of the same name when it has one."""
    owner = (gallery.created_by or "").strip()
    return f"PathSynth::{gallery.name}" + (f" ({owner})" if owner else "")


def export_anki(gallery: Gallery) -> bytes:
    """The gallery as an Anki ``.apkg`` deck (bytes), written in memory and a temporary folder it removes."""
    import genanki

    model = _anki_model()
    deck = genanki.Deck(anki_deck_id(gallery), anki_deck_name(gallery))
    media, classes = {}, get_domain(gallery.domain).classes
    for item in gallery.items:
        png = encode_png(item.image)
        media_name = f"pathsynth_{hashlib.sha256(png).hexdigest()[:24]}.png"  # Anki's media folder is shared
        media[media_name] = png
        fields = [f'<img src="{media_name}">', html.escape(classes[item.tissue].display_name),
                  html.escape(classes[item.tissue].description), html.escape(instructor_caption(item)),
                  html.escape(PROVENANCE.get(item.source, item.source))]
        deck.add_note(genanki.Note(model=model, fields=fields, guid=genanki.guid_for(deck.deck_id, media_name),
                                   tags=["pathsynth", classes[item.tissue].abbreviation]))
    return _write_apkg(genanki.Package(deck), media)


def _write_apkg(package, media: dict[str, bytes]) -> bytes:
    """``Package.write_to_file`` without its leftover temp file and with media from memory."""
    import itertools
    import time

    with tempfile.TemporaryDirectory(prefix="pathsynth-anki-") as folder:
        db_path = os.path.join(folder, "collection.anki2")
        connection = sqlite3.connect(db_path)
        try:
            timestamp = time.time()
            package.write_to_db(connection.cursor(), timestamp, itertools.count(int(timestamp * 1000)))
            connection.commit()
        finally:
            connection.close()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(db_path, "collection.anki2")
            archive.writestr("media", json.dumps({str(i): name for i, name in enumerate(media)}))
            for i, png in enumerate(media.values()):
                archive.writestr(str(i), png)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- handout

HANDOUT_CSS = """@page { size: A4; margin: 12mm; }
body { font-family: sans-serif; color: #222; margin: 12mm auto; padding: 0 6mm; max-width: 190mm; font-size: 10pt; }
@media print { body { margin: 0; padding: 0; } }
h1 { font-size: 16pt; margin: 0 0 2mm; } .description { margin: 0 0 4mm; white-space: pre-line; }
.notice { font-weight: bold; margin: 0 0 4mm; }
.tiles { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 3mm; }
@media (max-width: 600px) { .tiles { grid-template-columns: repeat(3, minmax(0, 1fr)); } }
figure { margin: 0; break-inside: avoid; min-width: 0; } figcaption { font-size: 8pt; overflow-wrap: anywhere; }
img { display: block; width: 100%; aspect-ratio: 1 / 1; object-fit: contain; image-rendering: pixelated;
  border: 1px solid #ccc; box-sizing: border-box; }
.scale { height: 2px; background: #222; margin: 1mm 0 0; } .scale-label { font-size: 7pt; color: #444; }
.origin { font-size: 7pt; text-transform: uppercase; letter-spacing: .03em; color: #555; }
.features dt { font-weight: bold; margin-top: 2mm; } .features dd { margin: 0; }
footer { margin-top: 4mm; font-size: 7pt; color: #666; }"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # nothing loads, nothing runs
ORIGINS = {"generated": "synthetic", "real": "real tile", "uploaded": "real: instructor's slide"}
SCALE_BAR_UM = 50  # short enough to fit under a 28 px tile (112 um)
NOTICE = "For education only — not for diagnosis. Tiles marked “synthetic” were drawn by a generative model."


def _scale_bar(image, domain=DEFAULT_DOMAIN) -> str:
    """A bar of ``SCALE_BAR_UM`` (in the domain's unit: µm on a tile, mm on a film) under an image: gallery images
    are at their data set's scale (uploads are converted to it), so the width follows from the pixels (a 28 px
    tile is 112 µm; a 28 px film about 196 mm)."""
    catalogue = get_domain(domain)
    share = min(100.0, 100.0 * SCALE_BAR_UM / (image.shape[1] * catalogue.units_per_pixel))
    return (f'<div class="scale" style="width:{share:.1f}%"></div>'
            f'<span class="scale-label">{SCALE_BAR_UM} {catalogue.unit}</span>')


def _figure(number: int, item, domain=DEFAULT_DOMAIN) -> str:
    import base64

    source = "data:image/png;base64," + base64.b64encode(encode_png(item.image)).decode("ascii")
    caption = instructor_caption(item)
    caption = f" — {html.escape(caption)}" if caption else ""
    origin = ORIGINS.get(item.source, item.source)
    name = get_domain(domain).classes[item.tissue].display_name
    return (f'<figure><img src="{source}" alt="Tile {number} ({origin})">{_scale_bar(item.image, domain)}'
            f'<figcaption><span class="origin">{html.escape(origin)}</span><br><b>{number}.</b> '
            f"{html.escape(name)}{caption}</figcaption></figure>")


def export_handout(gallery: Gallery) -> str:
    """A printable one-page HTML handout: the tiles (each marked synthetic or real, with a scale bar) and their
    captions, then the key features of each tissue shown; "for education only" at the top."""
    title = html.escape(gallery.name)
    figures = "\n".join(_figure(number, item, gallery.domain) for number, item in enumerate(gallery.items, start=1))
    catalogue = get_domain(gallery.domain)
    shown = [catalogue.classes[t] for t in sorted({item.tissue for item in gallery.items})]
    features = "\n".join(f"<dt>{html.escape(c.display_name)} ({c.abbreviation})</dt>"
                         f"<dd>{html.escape(c.description)}</dd>" for c in shown)
    kind = "colorectal H&amp;E tiles" if catalogue.flag == DEFAULT_DOMAIN else f"{html.escape(catalogue.name)} images"
    footer = f"{catalogue.units_per_pixel:g} {catalogue.unit} per pixel · PathSynth · {kind}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}"><title>{title}</title>'
            f"<style>{HANDOUT_CSS}</style></head><body>\n<h1>{title}</h1>\n"
            f'<p class="notice">{html.escape(NOTICE)}</p>\n'
            f'<p class="description">{html.escape(gallery.description)}</p>\n<section class="tiles">\n{figures}\n'
            f'</section>\n<h2>Key features</h2>\n<dl class="features">\n{features}\n</dl>\n'
            f"<footer>{len(gallery.items)} tiles · {footer} · for education only</footer>\n</body></html>\n")


__all__ = ["FORMAT", "FORMAT_VERSION", "anki_deck_id", "anki_deck_name", "csv_cell", "export_anki", "export_handout",
           "export_zip", "gallery_record", "import_zip", "metadata_csv", "read_archive"]

"""Where the app listens and keeps its data, locally and on Hugging Face Spaces; the Space's metadata."""

from __future__ import annotations

from pathlib import Path

import gradio
import yaml

from pathsynth.app import about
from pathsynth.settings import Settings, default_home, server_name

ROOT = Path(__file__).resolve().parent.parent


def test_a_laptop_app_listens_only_on_this_computer_unless_told():
    assert server_name({}) == "127.0.0.1"
    assert server_name({"SPACE_ID": "user/pathsynth"}) == "0.0.0.0"  # Spaces' proxy must reach it
    assert server_name({"GRADIO_SERVER_NAME": "0.0.0.0"}) == "0.0.0.0"
    assert server_name({"PATHSYNTH_HOST": "192.168.1.5"}) == "192.168.1.5"
    assert Settings.from_env({}).server_name == "127.0.0.1"


def test_on_spaces_galleries_live_on_the_persistent_volume_when_mounted(tmp_path):
    volume = tmp_path / "data"
    assert default_home({"SPACE_ID": "u/s"}, spaces_data=volume) == (Path.home() / ".pathsynth", False)
    volume.mkdir()
    assert default_home({"SPACE_ID": "u/s"}, spaces_data=volume) == (volume / "pathsynth", True)
    assert default_home({}, spaces_data=volume) == (Path.home() / ".pathsynth", True)  # not on Spaces
    explicit = Settings.from_env({"SPACE_ID": "u/s", "PATHSYNTH_HOME": str(tmp_path / "h")})
    assert explicit.home == tmp_path / "h" and explicit.home_persistent


def test_the_about_page_says_when_storage_is_ephemeral():
    reports = about.load_reports()
    assert "temporary" in about.trainee_page(reports, storage_persistent=False)
    assert "temporary" not in about.trainee_page(reports, storage_persistent=True)


def test_about_figures_come_from_the_reports(tmp_path):
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "report.json").write_text('{"first_try_acceptance": 0.5, "mean_attempts": 1.7}')
    page = about.trainee_page(about.load_reports(tmp_path))
    assert "**50%** of generated images pass" in page and "1.70 tries" in page
    assert "No evaluation report" in about.trainee_page(about.load_reports(tmp_path / "none"))


def test_model_card_images_are_served_from_files_not_broken_links(tmp_path):
    (tmp_path / "samples.png").write_bytes(b"png")
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\n---\n# Card\n![samples](samples.png)\n![gone](missing.png)\n")
    text, images = about.model_card(card)
    assert "](" not in text and "license" not in text and images == [tmp_path / "samples.png"]


def test_space_metadata_enables_sign_in_and_pins_the_gradio_version():
    front = (ROOT / "README.md").read_text(encoding="utf-8").split("---")[1]
    meta = yaml.safe_load(front)
    assert meta["hf_oauth"] is True and meta["app_file"] == "app.py"
    assert str(meta["sdk_version"]) == gradio.__version__

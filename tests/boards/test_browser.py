"""Boards and bulk selection in a real Chromium, at desktop and phone (390 px) widths."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.boards.models import Board, BoardItem
from app.db import utcnow
from app.jobs.models import Favourite, Job
from app.projects.service import Changer, create_project
from tests.browser import ARTIFACTS, chromium
from tests.factories import PASSWORD, make_person
from tests.gallery.rows import add_image, add_job

pytestmark = pytest.mark.browser

WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


@pytest.mark.parametrize("screen", list(WIDTHS))
def test_select_add_to_board_favourite_remove_zip_and_import_a_recipe(
    committed_db: Session, web: str, screen: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    person = make_person(committed_db, email=f"bea-{screen}@example.com")
    jobs = []
    for i in range(6):
        job = add_job(
            committed_db, person, f"a paper boat {i}", created_at=utcnow() - timedelta(minutes=i)
        )
        add_image(committed_db, job)
        jobs.append(job)
    board = Board(team_id=person.team.id, created_by_id=person.user.id, name="Harbour")
    committed_db.add(board)
    changer = Changer(team_id=person.team.id, user_id=person.user.id, email=person.user.email)
    client_a = create_project(committed_db, changer, name="Client A")
    committed_db.commit()
    width, height = WIDTHS[screen]
    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{web}/login?next=/gallery")
        page.fill("#login-email", person.user.email)
        page.fill("#login-password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{web}/gallery")

        # Click one tile, shift-click another: the range between them is selected.
        boxes = page.locator("[data-select]")
        expect(boxes).to_have_count(6)
        boxes.nth(0).click()
        boxes.nth(3).click(modifiers=["Shift"])
        expect(page.locator("[data-bulk-count]")).to_have_text("4 selected")
        expect(page.locator("figure.is-selected")).to_have_count(4)
        page.select_option("#bulk-board", str(board.id))
        page.click("button[data-bulk-action][value=board]")
        expect(page.locator("#bulk-result")).to_contain_text("Added to the board: 4.")
        page.screenshot(path=str(ARTIFACTS / f"bulk-gallery-{screen}.png"), full_page=True)
        if screen == "desktop":
            # The same four, moved to another project; then one more from its detail page.
            page.select_option("#bulk-project", str(client_a.id))
            page.click("button[data-bulk-move]")
            expect(page.locator("#bulk-result")).to_contain_text("Moved to the project: 4.")
            page.goto(f"{web}/gallery/{jobs[4].id}")
            expect(page.locator("[data-job-project]")).to_have_text("General")
            page.select_option("#detail-project", str(client_a.id))
            page.click(".detail-project button[type=submit]")
            expect(page.locator("#project-move-result")).to_contain_text("Moved to the project: 1.")
            page.goto(f"{web}/gallery")
            committed_db.expire_all()
            moved = committed_db.scalars(select(Job.id).where(Job.project_id == client_a.id)).all()
            assert set(moved) == {j.id for j in jobs[:5]}

        # The board page: the gallery's grid with only the board's images.
        page.goto(f"{web}/boards")
        expect(page.locator(".board-card")).to_contain_text("4 images")
        page.click(".board-link")
        expect(page.locator("#board-title")).to_have_text("Harbour")
        expect(page.locator("figure.tile")).to_have_count(4)
        # Every image matching the board's filter, favourited at once.
        page.check("[data-bulk-all]")
        expect(page.locator("[data-bulk-count]")).to_have_text("All matching images selected")
        page.click("button[data-bulk-action][value=favourite]")
        expect(page.locator("#bulk-result")).to_contain_text("Marked as favourite: 4.")
        # Take one off the board: its tile leaves the page, the image stays in the gallery.
        page.click("[data-bulk-clear]")
        page.locator("[data-select]").nth(0).click()
        page.click("button[data-bulk-action][value=unboard]")
        expect(page.locator("#bulk-result")).to_contain_text("Taken off the board: 1.")
        expect(page.locator("figure.tile")).to_have_count(3)

        # Download every image on the board as one ZIP.
        page.check("[data-bulk-all]")
        with page.expect_download() as waiting:
            page.click("[data-bulk-zip]")
        saved = tmp_path / "board.zip"
        waiting.value.save_as(saved)
        with zipfile.ZipFile(saved) as archive:
            names = archive.namelist()
            assert len(names) == 5 and names[-2:] == ["manifest.csv", "manifest.json"]
            first = archive.read(names[0])
        (tmp_path / "kept.jpg").write_bytes(first)
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"the board page is {scroll}px wide at {width}px"
        page.screenshot(path=str(ARTIFACTS / f"board-{screen}.png"), full_page=True)

        # Drop the downloaded image on a detail page: the generate form fills in.
        page.goto(f"{web}/gallery/{jobs[5].id}")
        plain = io.BytesIO()
        from PIL import Image as PILImage

        PILImage.new("RGB", (8, 8), "red").save(plain, "PNG")
        (tmp_path / "plain.png").write_bytes(plain.getvalue())
        page.set_input_files("#recipe-file", str(tmp_path / "plain.png"))
        expect(page.locator("#recipe-import-result")).to_contain_text("carries no studio recipe")
        page.set_input_files("#recipe-file", str(tmp_path / "kept.jpg"))
        page.wait_for_url(f"{web}/?*")
        prompt = page.locator("textarea[name=prompt]")
        expect(prompt).to_have_value(str(_prompt_of(committed_db, first)))
        assert errors == []
        context.close()

    committed_db.expire_all()
    assert len(committed_db.scalars(select(BoardItem)).all()) == 3
    assert len(committed_db.scalars(select(Favourite)).all()) == 4
    assert committed_db.scalar(select(Job).where(Job.deleted_at.is_not(None))) is None


def _prompt_of(db: Session, data: bytes) -> object:
    from PIL import Image as PILImage

    from app.recipes.embed import read_recipe

    with PILImage.open(io.BytesIO(data)) as picture:
        recipe = read_recipe(picture.info["xmp"])
    assert recipe is not None
    return recipe["prompt"]

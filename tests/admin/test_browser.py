"""The staff path through a real browser: Playwright driving Debian's Chromium (never a browser
download) against a live server. Screenshots go to test-artifacts/ (gitignored)."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dateutil.relativedelta import relativedelta
from django.db import connections

from invoicing.models import Invoice
from tests.admin.conftest import build_world
from tests.factories import ensure_eu_vat_rates

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium)",
    ),
]


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API runs an asyncio loop in this thread; the test still reads the
    # database synchronously, which Django refuses inside a running loop unless told it is safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
        # Connections opened while Playwright's loop ran live in its context, where the test
        # database teardown cannot see them; close them here so PostgreSQL can drop the database.
        connections.close_all()


def test_staff_generate_find_finalize_and_print_an_invoice(
    live_server, transactional_db, browser, django_user_model
):
    django_user_model.objects.create_superuser("staff", "staff@example.test", "correct-horse-battery")
    # A transactional test that ran before this one flushed the rates the data migration seeded.
    ensure_eu_vat_rates()
    # The live server bills at the real time: a subscription whose first month ended at the
    # start of this month is due now, with exactly one period to bill.
    this_month = datetime.now(tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    build_world(this_month - relativedelta(months=1))
    ARTIFACTS.mkdir(exist_ok=True)

    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_selector("#billing-overview-link")

    # Open the due subscription and generate its invoice now.
    page.goto(f"{live_server.url}/admin/subscriptions/subscription/")
    page.click("text=sub-baeckerei")
    page.click("#generate-invoice-now")
    message = page.inner_text(".messagelist .success")
    number = re.search(r"generated (INV-\d{4}-\d{4}) \(€61\.88,", message).group(1)

    # Find it by searching its number, open it, finalize it.
    page.goto(f"{live_server.url}/admin/invoicing/invoice/")
    page.fill("#searchbar", number)
    page.press("#searchbar", "Enter")
    page.wait_for_selector("#result_list")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "61.88" in rows.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "invoice-list.png"), full_page=True)
    page.click(f"#result_list >> text={number}")
    page.click("a.invoice-finalize")
    assert "Finalize: 1 of 1 selected invoice will change" in page.inner_text("#content")
    page.click("input[value='Yes, finalize']")
    assert page.inner_text(".messagelist .success") == f"Finalized 1 invoice: {number} (€61.88)."
    assert Invoice.objects.get(number=number).status == Invoice.Status.FINALIZED

    # The printable view opens in a new tab and shows the exact total in the seller's locale.
    with page.context.expect_page() as opened:
        page.click("text=View / print")
    printable = opened.value
    printable.wait_for_load_state()
    printable.set_viewport_size({"width": 1000, "height": 1200})
    assert printable.inner_text("#invoice-total") == "61,88\xa0€"
    body = printable.inner_text("body")
    assert number in body and "VAT 19 %" in body and "9,88\xa0€" in body
    printable.screenshot(path=str(ARTIFACTS / "printable-invoice.png"), full_page=True)

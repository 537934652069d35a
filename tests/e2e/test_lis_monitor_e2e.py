"""In headless Chromium: the LIS rejected a signed result (AR from a real MLLP LIS); the lab admin sees it
on the home page, opens the interface monitor from the menu, reads the LIS's error, sends the message
again and sees it acknowledged; the slide page shows the delivery state."""
import pytest

from lis import delivery
from lis.models import OutboxMessage
from tests.e2e.steps import open_page, users
from tests.lis.conftest import mllp_destination, signed
from tests.lis.peers import MllpLis

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def mllp_lis():
    lis = MllpLis().start()
    yield lis
    lis.close()


def test_a_lab_admin_reads_a_rejected_result_and_sends_it_again(browser, live_server, mllp_lis):
    people = users()
    destination = mllp_destination(mllp_lis.port)
    slide = signed("MON-0001", by=people["rev1"])
    mllp_lis.mode, mllp_lis.reason = "AR", "Order MON-0001 not found"
    delivery.destination_deliver(destination_id=destination.pk)
    message = OutboxMessage.objects.get()
    assert message.state == "failed"

    page = open_page(browser, live_server, "admin1")
    page.goto(f"{live_server.url}/")
    assert "1 result message(s) failed" in page.inner_text("#lis-home-alert")
    page.click("summary:has-text('Lab admin')")
    page.click("nav a:has-text('LIS interface')")
    page.wait_for_url(f"{live_server.url}/lis/")
    row = page.locator(f"#message-{message.pk}")
    assert row.locator(".message-state").inner_text() == "failed"
    assert "Order MON-0001 not found" in row.locator(".message-error").inner_text()
    assert row.locator(".message-answer strong").inner_text() == "AR"

    mllp_lis.mode = "AA"
    row.locator("button.resend").click()
    page.wait_for_url(f"{live_server.url}/lis/")
    assert "queued again" in page.inner_text("body")
    assert page.locator(f"#message-{message.pk} .message-state").inner_text() == "queued"
    delivery.destination_deliver(destination_id=destination.pk)  # the worker's turn
    page.reload()
    assert page.locator(f"#message-{message.pk} .message-state").inner_text() == "acknowledged"
    assert page.locator("#lis-alert").count() == 0
    page.goto(f"{live_server.url}/slides/{slide.pk}/")
    assert page.inner_text("#lis-state") == "acknowledged"
    assert OutboxMessage.objects.get().control_id in mllp_lis.control_ids()[-1]

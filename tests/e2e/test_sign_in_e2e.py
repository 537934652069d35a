"""In headless Chromium: where the lab requires a second factor, a reviewer sets up an authenticator
(the QR code's key read by a real TOTP generator, pyotp), keeps the recovery codes, and enters a code at
the next sign-in; the idle warning appears before the lab's timeout and "Stay signed in" keeps the session."""
import time

import pyotp
import pytest

from accounts.models import AccessSettings
from tests.factories import UserFactory
from tests.helpers import PASSWORD, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _sign_in(page, live_server, username):
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def test_a_reviewer_enrols_a_totp_authenticator_and_signs_in_with_it(browser, live_server):
    UserFactory(username="rev1", role="reviewer")
    AccessSettings.objects.update_or_create(pk=1, defaults={"require_otp_for_signers": True})
    page = browser.new_page()
    _sign_in(page, live_server, "rev1")
    page.wait_for_url(f"{live_server.url}/access/otp/enrol/?next=%2F")
    assert page.locator("#otp-qr").evaluate("img => img.complete && img.naturalWidth > 0")
    totp = pyotp.TOTP(page.inner_text("#otp-secret").strip())
    screenshot(page, "otp-enrol")
    page.fill("input[name=token]", totp.now())
    page.click("#otp-enrol button[type=submit]")
    assert page.locator(".recovery-code").count() == 10
    page.click("#otp-continue")
    page.wait_for_url(f"{live_server.url}/")

    page.click("form.logout button")
    _sign_in(page, live_server, "rev1")
    page.wait_for_url(f"{live_server.url}/access/otp/verify/?next=%2F")
    page.fill("input[name=token]", "000000")
    page.click("#otp-verify form:first-of-type button[type=submit]")
    assert "not right" in page.inner_text("#otp-error")
    time.sleep(1.1)  # django-otp throttles after a wrong code
    page.fill("input[name=token]", totp.at(time.time() + 30))  # the next step: the first code is used up
    page.click("#otp-verify form:first-of-type button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "LeukoPortal"


def test_a_directory_reviewer_signs_in_with_the_directorys_password_and_a_totp_code(browser, live_server, directory):
    from accounts.models import DirectoryGroupRole

    DirectoryGroupRole.objects.create(group_dn="cn=leuko-reviewers,ou=groups,dc=hospital,dc=test", role="reviewer")
    AccessSettings.objects.update_or_create(pk=1, defaults={"require_otp_for_signers": True})
    page = browser.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "dr.wave")
    page.fill("input[name=password]", "directory-pass-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/access/otp/enrol/?next=%2F")
    page.fill("input[name=token]", pyotp.TOTP(page.inner_text("#otp-secret").strip()).now())
    page.click("#otp-enrol button[type=submit]")
    page.click("#otp-continue")
    page.wait_for_url(f"{live_server.url}/")
    assert "Slides" in page.inner_text("nav")  # the reviewer's menu, from the directory's group


def test_the_idle_warning_comes_before_the_timeout_and_stay_signed_in_keeps_the_session(browser, live_server):
    UserFactory(username="lab1", role="labeller")
    AccessSettings.objects.update_or_create(pk=1, defaults={"idle_timeout_minutes": 2, "idle_warning_minutes": 1})
    page = browser.new_page()
    page.clock.install()
    _sign_in(page, live_server, "lab1")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("#idle-warning").count() == 0
    page.clock.run_for(65_000)
    assert "You will be logged out in" in page.inner_text("#idle-warning")
    screenshot(page, "idle-warning")
    with page.expect_response(lambda r: r.url.endswith("/access/keepalive/")) as keepalive:
        page.click("#idle-stay")
    assert keepalive.value.status == 204
    page.wait_for_selector("#idle-warning", state="detached")

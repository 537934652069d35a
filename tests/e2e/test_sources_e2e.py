"""In headless Chromium: a lab admin names a new microscope on the sources page, uploads offer it, and
once model versions have read its verified cells the agreement page shows that source's learning curve
with the figures of the seeded case (tests.reports.factories.seed_learning_curve)."""
import pytest

from tests.e2e.steps import source_named_in_the_browser
from tests.factories import UserFactory
from tests.helpers import logged_in_page, screenshot
from tests.reports.factories import seed_learning_curve

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_lab_admin_names_a_source_and_reads_its_learning_curve(browser, live_server):
    admin = UserFactory(username="admin1", role="lab_admin")
    page = logged_in_page(browser, live_server, "admin1", viewport={"width": 1366, "height": 900})
    page.click("summary:has-text('Lab admin')")
    page.click("nav a:has-text('Sources')")
    page.wait_for_url(f"{live_server.url}/sources/")
    scope = source_named_in_the_browser(page, live_server, "Scope B", "Second microscope, camera 2")
    assert page.inner_text(f"#source-{scope.pk} .source-name") == "Scope B"
    assert page.inner_text(f"#source-{scope.pk} .source-active") == "yes"

    page.goto(f"{live_server.url}/upload/")
    options = page.eval_on_selector_all("select[name=acquisition_source] option", "os => os.map(o => o.textContent)")
    assert options == ["The default source (Default)", "Default", "Scope B"]

    seeded = seed_learning_curve(user=admin, scope=scope)
    page.goto(f"{live_server.url}/reports/agreement/")
    curve = page.locator(f"#source-curve-{scope.pk}")
    curve.scroll_into_view_if_needed()
    v1 = curve.locator(f"tr[data-version='{seeded['v1'].pk}']")
    v2 = curve.locator(f"tr[data-version='{seeded['v2'].pk}']")
    assert [v1.locator(f".{c}").inner_text() for c in ("trained-on", "verified", "referred", "best-guess")] == [
        "0", "6", "100.0% 6", "50.0% 3/6"]
    assert v1.locator(".accepted-accuracy").inner_text().startswith("— 0/0")
    assert [v2.locator(f".{c}").inner_text() for c in ("trained-on", "verified", "referred", "accepted-wrong",
                                                        "best-guess")] == ["2", "5", "20.0% 1", "20.0% 1", "100.0% 1/1"]
    assert v2.locator(".accepted-accuracy").inner_text().startswith("75.0% 3/4")
    # the plot is drawn: two points of the share referred (100 % then 20 %), one of the accuracy
    referred = curve.locator("polyline.curve-referred").get_attribute("points").split()
    assert len(referred) == 2 and float(referred[0].split(",")[1]) < float(referred[1].split(",")[1])
    assert len(curve.locator("polyline.curve-accuracy").get_attribute("points").split()) == 1
    assert curve.locator("svg.sparkline").is_visible()
    default_curve = page.locator(f"#source-curve-{seeded['default'].pk}")
    assert default_curve.locator(".verified").all_inner_texts() == ["1"]
    assert page.js_errors == []
    screenshot(page, "source-learning-curve")

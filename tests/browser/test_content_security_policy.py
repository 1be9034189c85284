"""The page works under the Content-Security-Policy the server sends (scripts from 'self' only).

It lives with the page tests so that it shares their one Playwright session: a second sync
Playwright started while the first is open fails with "Sync API inside the asyncio loop".
"""

import httpx
import pytest

pytestmark = pytest.mark.browser

CSP_LISTENER = """
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', e =>
        window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def test_page_runs_under_its_content_security_policy(browser, server):
    policy = httpx.get(server + "/").headers["content-security-policy"]
    assert "script-src 'self'" in policy
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.add_init_script(CSP_LISTENER)
        console_errors = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(server + "/")
        page.wait_for_function("() => window.cnnviz && window.cnnviz.ready")
        page.get_by_role("button", name="Step", exact=True).click()
        page.wait_for_function("() => document.getElementById('session-status').textContent.includes('step 1')")
        violations = page.evaluate("window.__cspViolations")
    finally:
        context.close()
    assert violations == []
    assert not [error for error in console_errors if "Content Security Policy" in error]

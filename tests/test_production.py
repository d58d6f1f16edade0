"""Production settings: no start without a secret key, `check --deploy` clean under the HTTPS settings, a CSP.

The settings are read in a fresh process each time (as gunicorn, a worker or `manage.py` would read them), with an
environment built here from scratch for the DJANGO_* names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.env import proxy_ssl_header

ROOT = Path(__file__).resolve().parents[1]

# The production settings README documents for a deployment behind an HTTPS proxy (keep the two in step).
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "k3Jq8vQx0Zr7Lw2Tn5Yb9Hc4Md6Pf1Sg8Ua3Ve7Wi0Xo2Ek5Rj9Tl4Ny6Bq1Cz",  # 64 random characters
    "DJANGO_ALLOWED_HOSTS": "prefloop.example.org",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://prefloop.example.org",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https",
    "DJANGO_SECURE_COOKIES": "1",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
}


def manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`manage.py ARGS` in a new process under webapp.settings, with only `env` for the DJANGO_* names."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")}
    base |= {"DJANGO_SETTINGS_MODULE": "webapp.settings", "PREFLOOP_VAR_DIR": str(tmp_path / "var")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_debug_off_without_a_secret_key_refuses_to_start_and_says_why(tmp_path):
    """DJANGO_DEBUG=0 and no DJANGO_SECRET_KEY: a non-zero exit whose message names the variable and the fix."""
    result = manage("check", env={"DJANGO_DEBUG": "0"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set and DJANGO_DEBUG is off" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr


def test_debug_off_with_an_empty_secret_key_refuses_too(tmp_path):
    """`DJANGO_SECRET_KEY=` (as an unset compose variable renders it) is no key."""
    result = manage("check", env={"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": ""}, tmp_path=tmp_path)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY is not set" in result.stderr


def test_debug_on_starts_without_a_key_for_local_development(tmp_path):
    """The development key is used only with DJANGO_DEBUG=1."""
    result = manage("check", env={"DJANGO_DEBUG": "1"}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_under_the_documented_production_settings(tmp_path):
    """`manage.py check --deploy --fail-level WARNING` finds nothing with PRODUCTION_ENV."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_without_the_https_switches_check_deploy_names_each_one(tmp_path):
    """The switches are what makes it clean: with only a key, the HTTPS warnings are all there."""
    env = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": PRODUCTION_ENV["DJANGO_SECRET_KEY"]}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_the_proxy_header_is_read_as_django_spells_it(monkeypatch):
    """`X-Forwarded-Proto: https` becomes ("HTTP_X_FORWARDED_PROTO", "https"); unset is None; nonsense is refused."""
    monkeypatch.setenv("PROXY", "X-Forwarded-Proto: https")
    assert proxy_ssl_header("PROXY") == ("HTTP_X_FORWARDED_PROTO", "https")
    monkeypatch.setenv("PROXY", "HTTP_X_FORWARDED_SSL:on")
    assert proxy_ssl_header("PROXY") == ("HTTP_X_FORWARDED_SSL", "on")
    monkeypatch.delenv("PROXY")
    assert proxy_ssl_header("PROXY") is None
    monkeypatch.setenv("PROXY", "https")
    with pytest.raises(ImproperlyConfigured, match="PROXY must look like 'X-Forwarded-Proto: https'"):
        proxy_ssl_header("PROXY")


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/accounts/login/", "/api/docs/", "/admin/login/"])
def test_pages_are_served_with_a_strict_content_security_policy(client, url):
    """Scripts and styles from this origin only, nothing inline, no plugins, no framing."""
    policy = client.get(url)["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy

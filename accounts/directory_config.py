"""Directory (LDAP / Active Directory) sign-in settings from the environment, for django-auth-ldap.
Read by leukoportal/settings.py; no Django models here (settings import it before the apps load).

Nothing is configured unless LDAP_SERVER_URI is set; local accounts work either way."""
from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

ROLE_GROUP_VARIABLES = {"labeller": "LDAP_GROUP_LABELLER", "reviewer": "LDAP_GROUP_REVIEWER",
                        "lab_admin": "LDAP_GROUP_LAB_ADMIN"}
_GROUP_TYPES = ("groupOfNames", "groupOfUniqueNames", "posixGroup", "activeDirectory")


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ImproperlyConfigured(f"{name}={value!r}: use true or false.")
    return value == "true"


def directory_settings(environ: Mapping[str, str]) -> dict:
    """The AUTH_LDAP_* settings and LEUKO_LDAP_ROLE_GROUPS (role -> group DN, from the environment)
    for ``environ``; {} when LDAP_SERVER_URI is unset."""
    uri = environ.get("LDAP_SERVER_URI", "").strip()
    if not uri:
        return {}
    import ldap
    from django_auth_ldap.config import (ActiveDirectoryGroupType, GroupOfNamesType, GroupOfUniqueNamesType,
                                         LDAPSearch, PosixGroupType)

    user_base = environ.get("LDAP_USER_SEARCH_BASE", "").strip()
    group_base = environ.get("LDAP_GROUP_SEARCH_BASE", "").strip()
    if not user_base or not group_base:
        raise ImproperlyConfigured("LDAP_SERVER_URI is set: LDAP_USER_SEARCH_BASE and LDAP_GROUP_SEARCH_BASE are "
                                   "required too.")
    group_type = environ.get("LDAP_GROUP_TYPE", "groupOfNames").strip()
    if group_type not in _GROUP_TYPES:
        raise ImproperlyConfigured(f"LDAP_GROUP_TYPE={group_type!r}: one of {', '.join(_GROUP_TYPES)}.")
    # Per connection, the TLS context made afresh last (OPT_X_TLS_NEWCTX) so that the options apply.
    options = {ldap.OPT_NETWORK_TIMEOUT: 5, ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND}
    if environ.get("LDAP_CA_CERT_FILE"):
        options[ldap.OPT_X_TLS_CACERTFILE] = environ["LDAP_CA_CERT_FILE"]
    options[ldap.OPT_X_TLS_NEWCTX] = 0
    out = {
        "AUTH_LDAP_SERVER_URI": uri,
        "AUTH_LDAP_BIND_DN": environ.get("LDAP_BIND_DN", ""),
        "AUTH_LDAP_BIND_PASSWORD": environ.get("LDAP_BIND_PASSWORD", ""),
        "AUTH_LDAP_START_TLS": _bool(environ, "LDAP_START_TLS", False),
        "AUTH_LDAP_CONNECTION_OPTIONS": options,
        "AUTH_LDAP_USER_SEARCH": LDAPSearch(user_base, ldap.SCOPE_SUBTREE,
                                            environ.get("LDAP_USER_FILTER", "(uid=%(user)s)")),
        "AUTH_LDAP_GROUP_SEARCH": LDAPSearch(group_base, ldap.SCOPE_SUBTREE, "(objectClass=*)"),
        "AUTH_LDAP_GROUP_TYPE": {"groupOfNames": GroupOfNamesType, "groupOfUniqueNames": GroupOfUniqueNamesType,
                                 "posixGroup": PosixGroupType, "activeDirectory": ActiveDirectoryGroupType}[group_type](),
        # Only the user name comes from the directory: no names, no other attributes.
        "AUTH_LDAP_USER_ATTR_MAP": {},
        "AUTH_LDAP_ALWAYS_UPDATE_USER": True,
        "AUTH_LDAP_CACHE_TIMEOUT": 0,  # groups are read afresh at every sign-in
        "LEUKO_LDAP_ROLE_GROUPS": {role: environ[var].strip() for role, var in ROLE_GROUP_VARIABLES.items()
                                   if environ.get(var, "").strip()},
    }
    if environ.get("LDAP_DENY_GROUP", "").strip():
        out["AUTH_LDAP_DENY_GROUP"] = environ["LDAP_DENY_GROUP"].strip()
    if environ.get("LDAP_REQUIRE_GROUP", "").strip():
        out["AUTH_LDAP_REQUIRE_GROUP"] = environ["LDAP_REQUIRE_GROUP"].strip()
    return out

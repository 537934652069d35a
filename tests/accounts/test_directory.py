"""Directory sign-in against a real OpenLDAP server (slapd, started on a free loopback port): a
directory user signs in with the directory's password, their role follows the directory's groups at
each sign-in, a user the directory disables cannot sign in, and local accounts keep working."""
import pytest
from django.contrib.auth import get_user_model

from accounts.directory_config import directory_settings
from accounts.models import DirectoryGroupRole
from annotations.models import AuditEvent
from leukoportal.roles import role_of
from tests.helpers import PASSWORD

pytestmark = pytest.mark.django_db

REVIEWERS = "cn=leuko-reviewers,ou=groups,dc=hospital,dc=test"
LABELLERS = "cn=leuko-labellers,ou=groups,dc=hospital,dc=test"
WAVE = "uid=dr.wave,ou=people,dc=hospital,dc=test"


@pytest.fixture
def mapped(directory):
    DirectoryGroupRole.objects.create(group_dn=REVIEWERS, role="reviewer")
    DirectoryGroupRole.objects.create(group_dn=LABELLERS, role="labeller")
    return directory


def _login(client, username, password):
    return client.post("/accounts/login/", {"username": username, "password": password})


def _membership(server, group, change, member):
    server.ldap("ldapmodify", f"dn: {group}\nchangetype: modify\n{change}: member\nmember: {member}\n")


def test_a_directory_user_signs_in_with_the_directorys_password_and_role(client, mapped):
    r = _login(client, "dr.wave", "directory-pass-1")
    assert r.status_code == 302 and r["Location"] == "/"
    user = get_user_model().objects.get(username="dr.wave")
    assert not user.has_usable_password()  # the password stays in the directory
    assert user.first_name == "" and user.last_name == ""  # only the user name comes over
    assert role_of(user) == "reviewer"
    assert client.get("/slides/").status_code == 200
    event = AuditEvent.objects.get(action="user.directory_role")
    assert event.after == {"roles": ["reviewer"], "source": "directory"} and event.before == {"roles": []}
    assert _login(client.__class__(), "dr.wave", "wrong").status_code == 200  # the form again: refused


def test_the_role_follows_the_directory_at_each_sign_in(client, mapped):
    assert _login(client, "dr.wave", "directory-pass-1").status_code == 302
    _membership(mapped, REVIEWERS, "delete", WAVE)
    _membership(mapped, LABELLERS, "add", WAVE)
    try:
        assert _login(client.__class__(), "dr.wave", "directory-pass-1").status_code == 302
        assert role_of(get_user_model().objects.get(username="dr.wave")) == "labeller"
        _membership(mapped, LABELLERS, "delete", WAVE)
        other = client.__class__()
        assert _login(other, "dr.wave", "directory-pass-1").status_code == 302
        assert role_of(get_user_model().objects.get(username="dr.wave")) is None
        assert other.get("/").status_code == 403  # signed in, but no role: nothing to see
    finally:
        _membership(mapped, REVIEWERS, "add", WAVE)
    assert list(AuditEvent.objects.filter(action="user.directory_role").values_list("after__roles", flat=True)
                .order_by("id")) == [["reviewer"], ["labeller"], []]


def test_a_user_the_directory_disables_cannot_sign_in(client, mapped):
    assert _login(client, "gone.user", "directory-pass-3").status_code == 302
    _membership(mapped, "cn=disabled,ou=groups,dc=hospital,dc=test", "add", "uid=gone.user,ou=people,dc=hospital,dc=test")
    try:
        r = _login(client.__class__(), "gone.user", "directory-pass-3")
        assert r.status_code == 200 and "Your username and password didn't match." in r.content.decode()
    finally:
        _membership(mapped, "cn=disabled,ou=groups,dc=hospital,dc=test", "delete",
                    "uid=gone.user,ou=people,dc=hospital,dc=test")


def test_local_accounts_still_sign_in_beside_the_directory_and_without_it(client, mapped, lab_admin, settings):
    r = _login(client, lab_admin.username, PASSWORD)
    assert r.status_code == 302
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9/"  # the directory unreachable: break-glass still works
    r = _login(client.__class__(), lab_admin.username, PASSWORD)
    assert r.status_code == 302
    assert _login(client.__class__(), "dr.wave", "directory-pass-1").status_code == 200


def test_the_environments_mapping_takes_precedence(client, mapped, settings):
    env = {"LDAP_SERVER_URI": mapped.uri, "LDAP_USER_SEARCH_BASE": "ou=people,dc=hospital,dc=test",
           "LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=hospital,dc=test", "LDAP_GROUP_LAB_ADMIN": REVIEWERS}
    settings.LEUKO_LDAP_ROLE_GROUPS = directory_settings(env)["LEUKO_LDAP_ROLE_GROUPS"]
    assert _login(client, "dr.wave", "directory-pass-1").status_code == 302
    user = get_user_model().objects.get(username="dr.wave")
    assert role_of(user) == "lab_admin" and user.is_staff


def test_a_lab_admin_maps_a_group_audited(client, lab_admin, directory):
    client.force_login(lab_admin)
    r = client.post("/access/directory/", {"group_dn": REVIEWERS, "role": "reviewer"})
    assert r.status_code == 302 and DirectoryGroupRole.objects.get().role == "reviewer"
    assert AuditEvent.objects.get(action="settings.directory").after == {"group_dn": REVIEWERS, "role": "reviewer"}
    assert REVIEWERS in client.get("/access/").content.decode()
    client.post("/access/directory/", {"group_dn": REVIEWERS, "role": ""})
    assert not DirectoryGroupRole.objects.exists()


@pytest.mark.parametrize("transport", ["ldaps", "starttls"])
def test_the_directory_is_reached_over_verified_tls(client, mapped, settings, transport):
    env = {"LDAP_SERVER_URI": mapped.ldaps_uri if transport == "ldaps" else mapped.uri,
           "LDAP_START_TLS": "true" if transport == "starttls" else "false",
           "LDAP_USER_SEARCH_BASE": "ou=people,dc=hospital,dc=test", "LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=hospital,dc=test",
           "LDAP_BIND_DN": "cn=leukoportal,ou=services,dc=hospital,dc=test", "LDAP_BIND_PASSWORD": "service-bind-secret"}
    for name, value in directory_settings({**env, "LDAP_CA_CERT_FILE": str(mapped.ca_file)}).items():
        setattr(settings, name, value)
    assert _login(client, "dr.wave", "directory-pass-1").status_code == 302
    # Without the hospital's CA the server's certificate is not trusted: no directory sign-in.
    for name, value in directory_settings(env).items():
        setattr(settings, name, value)
    assert _login(client.__class__(), "dr.wave", "directory-pass-1").status_code == 200


def test_bad_directory_settings_stop_start_up():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="LDAP_USER_SEARCH_BASE and LDAP_GROUP_SEARCH_BASE are required"):
        directory_settings({"LDAP_SERVER_URI": "ldaps://dc.example"})
    with pytest.raises(ImproperlyConfigured, match="LDAP_START_TLS='yes'"):
        directory_settings({"LDAP_SERVER_URI": "ldaps://dc.example", "LDAP_USER_SEARCH_BASE": "x",
                            "LDAP_GROUP_SEARCH_BASE": "y", "LDAP_START_TLS": "yes"})
    assert directory_settings({}) == {}


def test_the_api_reads_and_sets_the_mapping_unless_the_environment_does(client, lab_admin, labeller, settings):
    client.force_login(labeller)
    assert client.get("/api/directory-groups/").status_code == 403
    client.force_login(lab_admin)
    r = client.post("/api/directory-groups/", {"group_dn": LABELLERS, "role": "labeller"}, content_type="application/json")
    assert r.status_code == 200 and r.json() == {"source": "lab settings",
                                                 "groups": [{"group_dn": LABELLERS, "role": "labeller"}]}
    assert client.post("/api/directory-groups/", {"group_dn": LABELLERS, "role": "chief"},
                       content_type="application/json").status_code == 400
    settings.LEUKO_LDAP_ROLE_GROUPS = {"reviewer": REVIEWERS}
    r = client.post("/api/directory-groups/", {"group_dn": LABELLERS, "role": None}, content_type="application/json")
    assert r.status_code == 409 and DirectoryGroupRole.objects.count() == 1
    assert client.get("/api/directory-groups/").json()["source"] == "environment"
    assert AuditEvent.objects.filter(action="settings.directory").count() == 1

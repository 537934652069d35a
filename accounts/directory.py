"""Directory sign-in (django-auth-ldap): the user's role follows the directory's groups at each sign-in."""
from django_auth_ldap.backend import LDAPBackend

from .services import directory_role_sync


class DirectoryBackend(LDAPBackend):
    """django-auth-ldap's backend; after the directory accepts the password (and the user is not in
    LDAP_DENY_GROUP), the user's role is set from their groups: removed from every mapped group, no role."""

    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is not None:
            directory_role_sync(user=user, group_dns=ldap_user.group_dns)
        return user

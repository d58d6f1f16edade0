from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        from labeling.roles import grant_role_permissions

        # Groups and their permissions are set up by every migrate, in this one place.
        post_migrate.connect(grant_role_permissions, dispatch_uid="labeling.roles.grant_role_permissions")

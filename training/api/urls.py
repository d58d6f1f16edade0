from rest_framework.routers import SimpleRouter

from training.api import views

router = SimpleRouter()  # the API root view belongs to labeling.api.urls
router.register("dataset-versions", views.DatasetVersionViewSet, basename="dataset-version")
router.register("dataset-exports", views.DatasetExportViewSet, basename="dataset-export")
router.register("runs", views.TrainingRunViewSet, basename="training-run")
router.register("models", views.ModelVersionViewSet, basename="model-version")

urlpatterns = router.urls

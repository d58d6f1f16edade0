from rest_framework.routers import SimpleRouter

from training.api import judges, views

router = SimpleRouter()  # the API root view belongs to labeling.api.urls
router.register("dataset-versions", views.DatasetVersionViewSet, basename="dataset-version")
router.register("dataset-exports", views.DatasetExportViewSet, basename="dataset-export")
router.register("runs", views.TrainingRunViewSet, basename="training-run")
router.register("models", views.ModelVersionViewSet, basename="model-version")
router.register("judges", judges.JudgeViewSet, basename="judge")
router.register("auto-rank-jobs", judges.AutoRankJobViewSet, basename="auto-rank-job")

urlpatterns = router.urls

from django.urls import path
from rest_framework.routers import DefaultRouter

from labeling.api import views

router = DefaultRouter()
router.register("prompt-sets", views.PromptSetViewSet, basename="prompt-set")

urlpatterns = [
    path("tasks/next/", views.NextTaskView.as_view(), name="next-task"),
    path("rankings/", views.SubmitRankingView.as_view(), name="submit-ranking"),
    path("assignments/<int:assignment_id>/skip/", views.SkipView.as_view(), name="skip-assignment"),
    *router.urls,
]

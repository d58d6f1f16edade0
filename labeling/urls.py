from django.urls import path

from labeling.views import adjudication, dashboard, pages

app_name = "labeling"

urlpatterns = [
    path("", pages.home, name="home"),
    path("sets/<int:prompt_set_id>/", pages.rank, name="rank"),
    path("assignments/<int:assignment_id>/submit/", pages.submit, name="submit"),
    path("assignments/<int:assignment_id>/skip/", pages.skip, name="skip"),
    path("me/", dashboard.my_numbers, name="my-numbers"),
    path("annotators/", dashboard.annotators, name="dashboard"),
    path("annotators/<int:annotator_id>/", dashboard.annotator, name="dashboard-annotator"),
    path("adjudication/", adjudication.index, name="adjudication"),
    path("adjudication/sets/<int:prompt_set_id>/", adjudication.prompt_set_tasks, name="adjudication-set"),
    path("adjudication/tasks/<int:task_id>/", adjudication.adjudicate, name="adjudicate"),
]

"""The admin's "Add people" form (labeling.admin_people); the list itself is checked by the service."""

from __future__ import annotations

from typing import Any

from django import forms

from labeling.services.people import ADMIN, MAX_PEOPLE_PER_LIST, ROLE_CHOICES


class AddPeopleForm(forms.Form):
    people = forms.CharField(
        label="People",
        widget=forms.Textarea(attrs={"rows": 12, "cols": 60, "spellcheck": "false"}),
        help_text=(
            "One person per line: <code>ada@example.org</code>, <code>Ada Lovelace &lt;ada@example.org&gt;</code> "
            f"or a username (<code>ada</code>); up to {MAX_PEOPLE_PER_LIST}. Blank lines and lines starting "
            "with # are ignored. A list with a bad line adds no one."
        ),
    )
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=ROLE_CHOICES[0][0])

    def __init__(self, *args: Any, may_add_admins: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.may_add_admins = may_add_admins

    def clean_role(self) -> str:
        role = self.cleaned_data["role"]
        if role == ADMIN and not self.may_add_admins:
            raise forms.ValidationError("Only a superuser may add admins.")
        return role

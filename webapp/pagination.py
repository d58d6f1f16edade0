"""The API's pagination: limit/offset with a largest page, so no query string reaches the database unbounded."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """`?limit=` is clamped to `max_limit`; an offset past the last row is an empty page.

    Without `max_limit` DRF passes any limit to the query, and `limit=2**64` overflowed Postgres' bigint LIMIT
    (a 500 for every user). An offset needs no bound of its own: DRF counts the rows first and answers an offset
    beyond the count with an empty page without querying, so an absurd one never reaches the database.
    """

    # default_limit stays REST_FRAMEWORK["PAGE_SIZE"]. A row of prompt sets or runs is a few hundred bytes:
    # 1,000 rows is far above any screen's need and well under a second to serialize.
    max_limit = 1000

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["description"] = (
                    f"Number of results to return per page (default {self.default_limit}; "
                    f"larger values are read as {self.max_limit})."
                )
        return parameters

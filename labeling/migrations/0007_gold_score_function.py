"""The gold score as a Postgres function (labeling.services.gold.GOLD_SCORE_SQL), for the lease statement.

A function, not the expression inline: inline, the planner estimated 100 rows for each jsonb_array_elements of its
four-way join, costed the lease statement past jit_above_cost and JIT-compiled it on every lease (seconds each).
plpgsql is never inlined, so the statement is costed as before. SQLite has no such functions: its queue path
scores in Python.
"""

from django.db import migrations

SCORE_BODY = """(CASE WHEN gold -> 'best' IS NOT NULL
    THEN (CASE WHEN tiers -> 0 = jsonb_build_array(gold -> 'best') THEN 1.0 ELSE 0.0 END)
    ELSE (SELECT avg(CASE WHEN mine_better.n < mine_worse.n THEN 1.0 ELSE 0.0 END)
          FROM (SELECT e.value AS id, o.n FROM jsonb_array_elements(gold -> 'order') WITH ORDINALITY o(tier, n),
                jsonb_array_elements(o.tier) e) known_better
          JOIN (SELECT e.value AS id, o.n FROM jsonb_array_elements(gold -> 'order') WITH ORDINALITY o(tier, n),
                jsonb_array_elements(o.tier) e) known_worse ON known_better.n < known_worse.n
          JOIN (SELECT e.value AS id, o.n FROM jsonb_array_elements(tiers) WITH ORDINALITY o(tier, n),
                jsonb_array_elements(o.tier) e) mine_better ON mine_better.id = known_better.id
          JOIN (SELECT e.value AS id, o.n FROM jsonb_array_elements(tiers) WITH ORDINALITY o(tier, n),
                jsonb_array_elements(o.tier) e) mine_worse ON mine_worse.id = known_worse.id)
    END)"""

CREATE = f"""CREATE OR REPLACE FUNCTION labeling_gold_score(tiers jsonb, gold jsonb) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $body$ BEGIN RETURN {SCORE_BODY}; END $body$"""
DROP = "DROP FUNCTION IF EXISTS labeling_gold_score(jsonb, jsonb)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0006_gold_tasks")]

    operations = [migrations.RunPython(create, drop)]

"""Queue scale. An index that gives an annotator's task ids without heap reads (the lease statement's "not theirs
already" read a heap page per assignment of their history). Prompt-set progress kept by triggers
(labeling.models.PromptSetProgress), so the lists of sets read a few rows per set instead of counting every task
(minutes per page at a million tasks on a loaded box).

PostgreSQL only: statement-level AFTER triggers with transition tables append one row per set a statement changed
(nothing when it changed no count), in the statement's own transaction. SQLite keeps counting (small databases).
"""

from django.db import migrations, models

# A task's contribution to its set's counts: (tasks, done, in progress, full).
_TASK_COUNTS = """
    SELECT prompt_set_id, 1 AS tasks, (status = 'done')::int AS done,
           (status = 'open' AND active_count > 0)::int AS in_progress,
           (status = 'open' AND active_count >= overlap)::int AS "full"
"""

INSTALL = f"""
CREATE FUNCTION labeling_task_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
        SELECT prompt_set_id, sum(tasks), sum(done), sum(in_progress), sum("full"), 0
        FROM ({_TASK_COUNTS} FROM new_rows) c GROUP BY prompt_set_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
        SELECT prompt_set_id, -sum(tasks), -sum(done), -sum(in_progress), -sum("full"), 0
        FROM ({_TASK_COUNTS} FROM old_rows) c GROUP BY prompt_set_id;
    ELSE
        -- New state minus old: a lease or submit that moves no count (most of them) appends nothing.
        INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
        SELECT prompt_set_id, sum(tasks), sum(done), sum(in_progress), sum("full"), 0
        FROM ({_TASK_COUNTS} FROM new_rows
              UNION ALL
              SELECT prompt_set_id, -tasks, -done, -in_progress, -"full" FROM ({_TASK_COUNTS} FROM old_rows) o) c
        GROUP BY prompt_set_id
        HAVING sum(tasks) <> 0 OR sum(done) <> 0 OR sum(in_progress) <> 0 OR sum("full") <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER task_progress_insert AFTER INSERT ON labeling_rankingtask
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_task_progress();
CREATE TRIGGER task_progress_update AFTER UPDATE ON labeling_rankingtask
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION labeling_task_progress();
CREATE TRIGGER task_progress_delete AFTER DELETE ON labeling_rankingtask
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_task_progress();

-- Human rankings per set. Django deletes a task's rankings before the task, so the join still finds it.
CREATE FUNCTION labeling_ranking_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
        SELECT t.prompt_set_id, 0, 0, 0, 0, count(*)
        FROM new_rows r JOIN labeling_rankingtask t ON t.id = r.task_id
        WHERE r.source = 'human' GROUP BY t.prompt_set_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
        SELECT t.prompt_set_id, 0, 0, 0, 0, -count(*)
        FROM old_rows r JOIN labeling_rankingtask t ON t.id = r.task_id
        WHERE r.source = 'human' GROUP BY t.prompt_set_id;
    ELSE
        INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
        SELECT t.prompt_set_id, 0, 0, 0, 0, sum(c.n)
        FROM (SELECT task_id, 1 AS n FROM new_rows WHERE source = 'human'
              UNION ALL SELECT task_id, -1 FROM old_rows WHERE source = 'human') c
        JOIN labeling_rankingtask t ON t.id = c.task_id
        GROUP BY t.prompt_set_id HAVING sum(c.n) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ranking_progress_insert AFTER INSERT ON labeling_ranking
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_ranking_progress();
CREATE TRIGGER ranking_progress_update AFTER UPDATE ON labeling_ranking
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION labeling_ranking_progress();
CREATE TRIGGER ranking_progress_delete AFTER DELETE ON labeling_ranking
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION labeling_ranking_progress();

-- The counts so far (CREATE TRIGGER locked both tables against writes until this migration commits).
INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
SELECT prompt_set_id, sum(tasks), sum(done), sum(in_progress), sum("full"), 0
FROM ({_TASK_COUNTS} FROM labeling_rankingtask) c GROUP BY prompt_set_id;
INSERT INTO labeling_promptsetprogress (prompt_set_id, tasks, done, in_progress, "full", rankings)
SELECT t.prompt_set_id, 0, 0, 0, 0, count(*)
FROM labeling_ranking r JOIN labeling_rankingtask t ON t.id = r.task_id
WHERE r.source = 'human' GROUP BY t.prompt_set_id;
"""

REMOVE = """
DROP TRIGGER IF EXISTS task_progress_insert ON labeling_rankingtask;
DROP TRIGGER IF EXISTS task_progress_update ON labeling_rankingtask;
DROP TRIGGER IF EXISTS task_progress_delete ON labeling_rankingtask;
DROP TRIGGER IF EXISTS ranking_progress_insert ON labeling_ranking;
DROP TRIGGER IF EXISTS ranking_progress_update ON labeling_ranking;
DROP TRIGGER IF EXISTS ranking_progress_delete ON labeling_ranking;
DROP FUNCTION IF EXISTS labeling_task_progress();
DROP FUNCTION IF EXISTS labeling_ranking_progress();
"""


def install(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL)


def remove(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REMOVE)


class Migration(migrations.Migration):
    dependencies = [("labeling", "0009_active_learning")]

    operations = [
        migrations.CreateModel(
            name="PromptSetProgress",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("prompt_set_id", models.BigIntegerField(db_index=True)),
                ("tasks", models.IntegerField(default=0)),
                ("done", models.IntegerField(default=0)),
                ("in_progress", models.IntegerField(default=0, help_text="Open tasks with some slot taken.")),
                ("full", models.IntegerField(default=0, help_text="Open tasks with every slot taken.")),
                (
                    "rankings",
                    models.IntegerField(default=0, help_text="Human rankings (judge rankings are not progress)."),
                ),
            ],
        ),
        migrations.RunPython(install, remove),
        migrations.AddIndex(
            model_name="assignment",
            index=models.Index(fields=["annotator", "status", "task"], name="assignment_history_idx"),
        ),
    ]

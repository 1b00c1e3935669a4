"""The catalog questions the stages ask, as named functions over the ``schemas.tables`` names
(no SQL strings scattered in the conductor). Each returns Arrow or plain Python values."""

from __future__ import annotations

import pyarrow as pa

from catalog import Catalog
from schemas.tables import (EVALUATIONS, IMAGES, ITERATIONS, MODELS, QUESTIONS, RESPONSES, REWARD_CONFIGS,
                            REWARDS, TOKEN_STATS, VERDICTS)


EMPTY = "coalesce(len(token_ids), 0) = 0"
"""SQL over a ``responses`` row: the response is *empty*, its engine emitted no token (an
immediate EOS). It has nothing to be scored on: it gets no token_stats row, is left out of its
group (the group is rewarded over its other members) and gets no reward; the ``score`` stage
counts it ('empty responses'). A group left with fewer than ``MIN_GROUP`` non-empty members has
nothing to normalise over and is not rewarded; the ``rewards`` stage counts it ('groups skipped')."""
MIN_GROUP = 2


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def scope_filter(iteration: int | None, run_id: str | None, alias: str = "it") -> str:
    """SQL restricting an ``iterations`` alias to one iteration (of one run when given)."""
    out = "" if iteration is None else f" AND {alias}.iteration = {int(iteration)}"
    if run_id is not None:
        out += f" AND {alias}.run_id = {_sql_str(run_id)}"
    return out


def in_list(column: str, values: list[str] | None) -> str:
    """`` AND column IN ('a', 'b')`` with the values inlined (literals let DuckLake skip the other
    partitions' files at planning time); empty when ``values`` is None (no restriction)."""
    if values is None:
        return ""
    return f" AND {column} IN ({', '.join(_sql_str(v) for v in values) or 'NULL'})"


def iteration_ids_in_scope(catalog: Catalog, iteration: int | None, run_id: str | None) -> list[str] | None:
    """The iteration ids an (iteration, run) scope covers; None for the whole catalog."""
    if iteration is None and run_id is None:
        return None
    return catalog.sql(f"SELECT iteration_id FROM {ITERATIONS.name} it WHERE true"
                       + scope_filter(iteration, run_id) + " ORDER BY 1").column(0).to_pylist()


def questions_with_images(catalog: Catalog, split: str) -> pa.Table:
    """question_id, question, image bytes of a split, by question id."""
    return catalog.sql(f"SELECT q.question_id, q.question, im.bytes FROM {QUESTIONS.name} q "
                       f"JOIN {IMAGES.name} im USING (image_id) WHERE q.split = $s ORDER BY q.question_id",
                       params={"s": split})


def question_texts(catalog: Catalog, split: str) -> pa.Table:
    """question_id, question of a split's questions that have an image, by question id."""
    return catalog.sql(f"SELECT q.question_id, q.question FROM {QUESTIONS.name} q "
                       f"JOIN {IMAGES.name} im USING (image_id) WHERE q.split = $s ORDER BY q.question_id",
                       params={"s": split})


def question_images(catalog: Catalog, question_ids: list[str]) -> dict[str, bytes]:
    """question_id -> image bytes, for these questions."""
    t = catalog.sql(f"SELECT q.question_id, im.bytes FROM {QUESTIONS.name} q JOIN {IMAGES.name} im "
                    "USING (image_id) WHERE q.question_id IN (SELECT unnest($ids))", params={"ids": question_ids})
    return dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))


def question_count(catalog: Catalog, split: str) -> int:
    return catalog.sql(f"SELECT count(*) FROM {QUESTIONS.name} WHERE split = $s",
                       params={"s": split}).column(0)[0].as_py()


def split_questions(catalog: Catalog, split: str, limit: int | None = None) -> tuple[pa.Table, pa.Table]:
    """(questions, their images) of a split, by question id, at most ``limit`` questions."""
    qs = catalog.sql(f"SELECT * FROM {QUESTIONS.name} WHERE split = $s ORDER BY question_id"
                     + (f" LIMIT {int(limit)}" if limit else ""), params={"s": split})
    images = catalog.sql(f"SELECT * FROM {IMAGES.name} WHERE image_id IN (SELECT image_id FROM {QUESTIONS.name} "
                         "WHERE split = $s)", params={"s": split})
    return qs, images


def iteration_config_hash(catalog: Catalog, iteration_id: str) -> str | None:
    found = catalog.sql(f"SELECT config_hash FROM {ITERATIONS.name} WHERE iteration_id = $it",
                        params={"it": iteration_id}).column(0).to_pylist()
    return found[0] if found else None


def present_ids(catalog: Catalog, table: str, id_column: str, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    return set(catalog.sql(f"SELECT {id_column} FROM {table} WHERE {id_column} IN (SELECT unnest($ids))",
                           params={"ids": ids}).column(0).to_pylist())


def model_ids_present(catalog: Catalog, model_ids: list[str]) -> set[str]:
    return present_ids(catalog, MODELS.name, "model_id", model_ids)


def reward_config_present(catalog: Catalog, reward_config_id: str) -> bool:
    return bool(present_ids(catalog, REWARD_CONFIGS.name, "reward_config_id", [reward_config_id]))


def response_ids(catalog: Catalog, iteration_id: str, source: str) -> set[str]:
    return set(catalog.sql(f"SELECT response_id FROM {RESPONSES.name} WHERE iteration_id = $it AND source = $s",
                           params={"it": iteration_id, "s": source}).column(0).to_pylist())


def iteration_responses(catalog: Catalog, iteration_id: str, columns: str = "response_id, question_id, prompt, "
                        "token_ids", non_empty: bool = False) -> pa.Table:
    """Columns of an iteration's responses (only the non-empty ones: ``non_empty``), by question,
    source and sample index."""
    return catalog.sql(f"SELECT {columns} FROM {RESPONSES.name} WHERE iteration_id = $it"
                       + (f" AND NOT ({EMPTY})" if non_empty else "") + " ORDER BY question_id, source, sample_index",
                       params={"it": iteration_id})


def empty_response_questions(catalog: Catalog, iteration_id: str) -> list[str]:
    """The question of each empty response of an iteration (one entry per response; ``EMPTY``)."""
    return catalog.sql(f"SELECT question_id FROM {RESPONSES.name} WHERE iteration_id = $it AND {EMPTY} "
                       "ORDER BY question_id", params={"it": iteration_id}).column(0).to_pylist()


def responses_by_id(catalog: Catalog, response_ids: list[str], columns: str,
                    iteration_ids: list[str] | None = None) -> dict[str, dict]:
    """response_id -> the columns asked for, for these responses (of these iterations)."""
    rows = catalog.sql(f"SELECT response_id, {columns} FROM {RESPONSES.name} "
                       "WHERE response_id IN (SELECT unnest($ids))" + in_list("iteration_id", iteration_ids),
                       params={"ids": response_ids}).to_pylist()
    return {r["response_id"]: r for r in rows}


def scored_ids(catalog: Catalog, iteration_id: str) -> set[str]:
    """stats ids of the iteration's responses already scored (by any pair)."""
    return set(catalog.sql(f"SELECT stats_id FROM {TOKEN_STATS.name} WHERE true"
                           + in_list("iteration_id", [iteration_id])).column(0).to_pylist())


def unjudged(catalog: Catalog, judge_id: str, iteration: int | None, run_id: str | None) -> list[dict]:
    """response_id, iteration_id, question_id and ``attempt`` (its earlier error verdicts, retried as new
    attempts) of the responses that have no final verdict (ok / unparseable) of the judge."""
    its = iteration_ids_in_scope(catalog, iteration, run_id)
    return catalog.sql(
        f"SELECT r.response_id, r.iteration_id, r.question_id, "
        f"(SELECT count(*) FROM {VERDICTS.name} e WHERE e.response_id = r.response_id AND e.judge_id = $j "
        " AND e.state = 'error'" + in_list("e.iteration_id", its) + ") AS attempt "
        f"FROM {RESPONSES.name} r "
        f"WHERE r.response_id NOT IN (SELECT response_id FROM {VERDICTS.name} WHERE judge_id = $j "
        "AND state IN ('ok', 'unparseable')" + in_list("iteration_id", its) + ")"
        + in_list("r.iteration_id", its) + " ORDER BY r.response_id", params={"j": judge_id}).to_pylist()


def judge_inputs(catalog: Catalog, response_ids: list[str], iteration_ids: list[str] | None = None) -> dict[str, dict]:
    """response_id -> its iteration, question, answer, answers (every accepted answer; null in rows
    of older catalogs: just ``answer``), answer_type, choices and text."""
    rows = catalog.sql(f"SELECT r.response_id, r.iteration_id, q.question, q.answer, q.answers, q.answer_type, "
                       "q.choices, r.text "
                       f"FROM {RESPONSES.name} r JOIN {QUESTIONS.name} q USING (question_id) "
                       "WHERE r.response_id IN (SELECT unnest($ids))" + in_list("r.iteration_id", iteration_ids),
                       params={"ids": response_ids}).to_pylist()
    return {r["response_id"]: r for r in rows}


def responses_in_scope(catalog: Catalog, iteration: int | None, run_id: str | None) -> int:
    return catalog.sql(f"SELECT count(*) FROM {RESPONSES.name} r JOIN {ITERATIONS.name} it USING (iteration_id) "
                       "WHERE true" + scope_filter(iteration, run_id)).column(0)[0].as_py()


def scoped_responses_sql(catalog: Catalog, iteration: int | None, run_id: str | None,
                         version: int | None = None) -> str:
    """A SQL table reference: the responses of an iteration / run (all when both are None)."""
    responses = f"(SELECT * FROM {catalog.table_ref(RESPONSES.name, version)})"
    if iteration is None and run_id is None:
        return responses
    return (f"(SELECT r.* FROM {responses} AS r JOIN (SELECT * FROM {catalog.table_ref(ITERATIONS.name, version)}) "
            f"AS it USING (iteration_id) WHERE true{scope_filter(iteration, run_id)})")


def rewardable_responses_sql(catalog: Catalog, iteration: int | None, run_id: str | None,
                             version: int | None = None) -> str:
    """A SQL table reference: the responses of an iteration / run that rewards are computed over,
    the non-empty ones of groups with at least ``MIN_GROUP`` of them (``EMPTY``)."""
    return (f"(SELECT * FROM {scoped_responses_sql(catalog, iteration, run_id, version)} AS r "
            f"WHERE NOT ({EMPTY}) QUALIFY count(*) OVER (PARTITION BY group_id) >= {MIN_GROUP})")


def skipped_group_questions(catalog: Catalog, responses: str) -> list[str]:
    """The question of each group of a responses table reference with fewer than ``MIN_GROUP``
    non-empty members (not rewarded)."""
    return catalog.sql(f"SELECT any_value(question_id) FROM {responses} AS r GROUP BY group_id "
                       f"HAVING count(*) FILTER (WHERE NOT ({EMPTY})) < {MIN_GROUP} ORDER BY 1").column(0).to_pylist()


def group_questions(catalog: Catalog, responses: str) -> dict[str, str]:
    """group_id -> question_id over a responses table reference."""
    rows = catalog.sql(f"SELECT DISTINCT group_id, question_id FROM {responses} AS r").to_pylist()
    return {r["group_id"]: r["question_id"] for r in rows}


def reward_means(catalog: Catalog, iteration_id: str, reward_config_id: str) -> dict[str, float]:
    """Mean reward per source of an iteration under a reward config."""
    rows = catalog.sql(f"SELECT r.source, avg(w.reward) AS m FROM {REWARDS.name} w JOIN {RESPONSES.name} r "
                       "USING (response_id) WHERE r.iteration_id = $it AND w.reward_config_id = $rc"
                       + in_list("w.iteration_id", [iteration_id]) + " GROUP BY r.source",
                       params={"it": iteration_id, "rc": reward_config_id}).to_pylist()
    return {m["source"]: m["m"] for m in rows}


def evaluations_of(catalog: Catalog, model_id: str, split: str, judge_id: str, questions_hash: str) -> list[dict]:
    """Earlier measurements of a checkpoint on the same questions, judge and decoding, oldest first."""
    return catalog.sql(f"SELECT evaluation_id, accuracy, per_type, n FROM {EVALUATIONS.name} WHERE model_id = $m "
                       "AND split = $s AND judge_id = $j AND questions_hash = $q ORDER BY created_at",
                       params={"m": model_id, "s": split, "j": judge_id, "q": questions_hash}).to_pylist()


def evaluation_ids_present(catalog: Catalog, evaluation_ids: list[str]) -> set[str]:
    return present_ids(catalog, EVALUATIONS.name, "evaluation_id", evaluation_ids)

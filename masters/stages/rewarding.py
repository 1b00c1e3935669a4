"""Stage ``rewards``: reward rows under the scope's reward config for every complete group not
rewarded yet. ``todo`` runs the per-response half of the reward query inside the catalog engine
(verdicts of the config's judge, D aggregated from the stored summaries of each iteration's
scoring pair: ``rewards.scores.reward_inputs_sql``); a unit is one group's inputs, and
``produce`` applies the group normalisation (``reward_rows_sql``) to a batch of groups. The same
two halves make ``rewards.scores.reward_sql``, so the rows equal a bulk ``masters rescore``'s.

Rewards are computed over the non-empty responses of groups with at least two of them
(``queries.rewardable_responses_sql``): an empty response (no token, never scored) is left out of
its group, which is rewarded over the others once they are scored and judged; a group with fewer
than two non-empty members is skipped and counted ('groups skipped')."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from catalog import Catalog
from masters.stages import queries
from masters.stages.base import Stage, Unit, with_data
from masters.stages.scope import RewardScope
from rewards.scores import check_hex_ids, reward_inputs_sql, reward_rows_sql
from schemas.tables import ITERATIONS, RESPONSES, REWARDS, TOKEN_STATS, VERDICTS


def _inputs_sql(scope: RewardScope, responses: str, iteration_ids: list[str] | None) -> str:
    return reward_inputs_sql(scope.config, responses, VERDICTS.name, TOKEN_STATS.name, ITERATIONS.name,
                             iteration_ids)


def todo(catalog: Catalog, scope: RewardScope) -> list[Unit]:
    """The complete groups of the scope without reward rows under the config."""
    its = queries.iteration_ids_in_scope(catalog, scope.iteration, scope.run_id)
    responses = queries.rewardable_responses_sql(catalog, scope.iteration, scope.run_id)
    check_hex_ids(catalog.connection(), responses)
    groups = catalog.sql(f"SELECT group_id, count(*) AS n FROM ({_inputs_sql(scope, responses, its)}) AS i "
                         f"WHERE group_id NOT IN (SELECT group_id FROM {REWARDS.name} WHERE reward_config_id = $c"
                         + queries.in_list("iteration_id", its) + ") GROUP BY group_id ORDER BY group_id",
                         params={"c": scope.config.id}).to_pylist()
    question = queries.group_questions(catalog, responses)
    return [Unit(g["group_id"], question[g["group_id"]], {}, weight=g["n"]) for g in groups]


def hydrate(catalog: Catalog, scope: RewardScope, units) -> list[Unit]:
    """The batch's per-response inputs (verdict, D), computed in the catalog engine."""
    responses = (f"(SELECT * FROM {queries.rewardable_responses_sql(catalog, scope.iteration, scope.run_id)} AS r "
                 "WHERE group_id IN (SELECT unnest($g)))")
    its = queries.iteration_ids_in_scope(catalog, scope.iteration, scope.run_id)
    rows = catalog.sql(f"SELECT * FROM ({_inputs_sql(scope, responses, its)}) AS i ORDER BY group_id, response_id",
                       params={"g": [u.id for u in units]}).to_pylist()
    members: dict[str, list[dict]] = {}
    for r in rows:
        members.setdefault(r["group_id"], []).append(r)
    return with_data(units, lambda u: {"members": members.get(u.id, [])})


def left_out(catalog: Catalog, scope: RewardScope) -> dict[str, list[str]]:
    """The groups of the scope with fewer than two non-empty responses (by question): not rewarded."""
    responses = queries.scoped_responses_sql(catalog, scope.iteration, scope.run_id)
    return {"groups skipped": queries.skipped_group_questions(catalog, responses)}


class Rewarder:
    def __init__(self, scope: RewardScope, models=None):
        self.config = scope.config

    def produce(self, units) -> dict:
        inputs = pa.Table.from_pylist([r for u in units for r in u.data["members"]])
        if inputs.num_rows == 0:
            return {}
        con = duckdb.connect()
        try:
            con.register("inputs", inputs)
            table = con.execute(reward_rows_sql(self.config, "inputs")).to_arrow_table()
        finally:
            con.close()
        return {REWARDS.name: table.cast(REWARDS.schema)}

    def close(self) -> None:
        pass


REWARD = Stage(name="rewards", reads=(RESPONSES.name, VERDICTS.name, TOKEN_STATS.name, ITERATIONS.name, REWARDS.name),
               writes=(REWARDS.name,), todo=todo, open=Rewarder, batch=lambda scope: scope.groups_per_batch,
               fault="rewards", hydrate=hydrate, left_out=left_out)

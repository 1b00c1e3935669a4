"""Stage ``rewards``: reward rows under the scope's reward config for every complete group not
rewarded yet. ``todo`` runs the per-response half of the reward query inside the catalog engine
(verdicts of the config's judge, D aggregated from the stored summaries of each iteration's
scoring pair: ``rewards.scores.reward_inputs_sql``); a unit is one group's inputs, and
``produce`` applies the group normalisation (``reward_rows_sql``) to a batch of groups. The same
two halves make ``rewards.scores.reward_sql``, so the rows equal a bulk ``masters rescore``'s."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from catalog import Catalog
from masters.stages import queries
from masters.stages.base import Stage, Unit
from masters.stages.scope import RewardScope
from rewards.scores import check_hex_ids, reward_inputs_sql, reward_rows_sql
from schemas.tables import ITERATIONS, RESPONSES, REWARDS, TOKEN_STATS, VERDICTS


def todo(catalog: Catalog, scope: RewardScope) -> list[Unit]:
    responses = queries.scoped_responses_sql(catalog, scope.iteration, scope.run_id)
    check_hex_ids(catalog.connection(), responses)
    inputs = reward_inputs_sql(scope.config, responses, VERDICTS.name, TOKEN_STATS.name, ITERATIONS.name)
    rows = catalog.sql(f"SELECT * FROM ({inputs}) AS i WHERE group_id NOT IN (SELECT group_id FROM {REWARDS.name} "
                       "WHERE reward_config_id = $c) ORDER BY group_id, response_id",
                       params={"c": scope.config.id}).to_pylist()
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group_id"], []).append(r)
    return [Unit(g, members[0]["question_id"], members, weight=len(members)) for g, members in groups.items()]


class Rewarder:
    def __init__(self, scope: RewardScope, models=None):
        self.config = scope.config

    def produce(self, units) -> dict:
        inputs = pa.Table.from_pylist([r for u in units for r in u.data])
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
               fault="rewards")

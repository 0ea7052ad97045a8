-- main_0002: drop the `_aiida_hash` extra of every CalcJobNode (aiida's main_0002_recompute_hash_calc_job_node).
-- aiida changed how CalcJobNode hashes are computed, so the stored ones are stale; `verdi node rehash` recomputes them.
-- aiida matches the node type by equality and rewrites the extras with json_remove (compact JSON text).
UPDATE db_dbnode
SET extras = json_remove(extras, '$._aiida_hash')
WHERE node_type = 'process.calculation.calcjob.CalcJobNode.'
  AND json_type(extras, '$._aiida_hash') IS NOT NULL;

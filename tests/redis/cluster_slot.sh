#!/usr/bin/env bash
# Run by CTest under `BUDGET_REDIS_CLUSTER=1 tools/with-redis.sh`: a redis-server in cluster
# mode (one node, every slot). There Redis refuses a function call that touches keys of more
# than one slot, or a key outside the slot of its declared key, so the Redis suites passing
# here prove the key layout's claim: every script touches one hash tag (docs/redis.md).
#   cluster_slot.sh <test_conformance> <test_redis>
set -euo pipefail
conformance="$1"
redis_tests="$2"
cli=("$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT")

# The check itself can fail: a function touching two slots is refused on this server.
"${cli[@]}" FUNCTION LOAD REPLACE "#!lua name=budget_slot_probe
redis.register_function('budget_slot_probe', function() redis.call('SET', '{a}x', 1); redis.call('SET', '{b}x', 1); return 1 end)" >/dev/null
probe="$("${cli[@]}" FCALL budget_slot_probe 0 2>&1 || true)"
case "$probe" in
  *"do not hash to the same slot"*) ;;
  *) echo "cluster_slot: FATAL: this server does not enforce one slot per function call (got: $probe)" >&2; exit 1 ;;
esac
"${cli[@]}" FUNCTION DELETE budget_slot_probe >/dev/null

BUDGET_TEST_STORES=redis "$conformance"
# The store ran its scripts as functions (FCALL), where the check applies (not as EVAL).
if ! "${cli[@]}" FUNCTION LIST | grep -q '^budget_'; then
  echo "cluster_slot: FATAL: no budget function library was loaded: the scripts ran unchecked" >&2
  exit 1
fi
"$redis_tests"
echo "cluster_slot: the conformance and Redis suites passed on a cluster-mode node (one slot per call enforced)"

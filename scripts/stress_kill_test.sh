#!/usr/bin/env bash
# Issue 22's check of the field locks: the kill-and-resume test 10 times in a row while
# two busy loops keep both cores busy. Stops at the first failure and shows its log.
#   bash scripts/stress_kill_test.sh      (about 18 minutes on 2 cores)
cd "$(dirname "$0")/.."
python3 -c "while True: pass" & b1=$!
python3 -c "while True: pass" & b2=$!
trap "kill $b1 $b2" EXIT
for i in $(seq 1 10); do
  if env FIFTYONE_DO_NOT_TRACK=true FIFTYONE_PLUGINS_DIR=$PWD/.plugins .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_interruption.py -k killed_at_random > "${TMPDIR:-/tmp}/stress_kill_$i.log" 2>&1; then
    echo "run $i passed $(tail -1 "${TMPDIR:-/tmp}/stress_kill_$i.log")"
  else
    echo "run $i FAILED"; tail -30 "${TMPDIR:-/tmp}/stress_kill_$i.log"; exit 1
  fi
done
echo "10 of 10 passed"

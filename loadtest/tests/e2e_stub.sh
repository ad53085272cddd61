#!/bin/bash
# End-to-end check of sluice-load against openai_stub.py (a stub OpenAI server, no model):
# the numbers sluice-load reports must match what the stub was told to do.
#   e2e_stub.sh PATH/TO/sluice-load [python3]
set -euo pipefail
LOAD=$1
PY=${2:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/lt-e2e.XXXXXX)
STUB_PID=
cleanup() {
    if [ -n "$STUB_PID" ]; then kill "$STUB_PID" 2>/dev/null || true; wait "$STUB_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$PY" "$HERE/openai_stub.py" --port 0 --api-key sk-test --ttft-ms 40 --itl-ms 4 --fail-every 10 \
    >"$WORK/port" 2>"$WORK/stub.err" &
STUB_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT=$(head -n1 "$WORK/port")
[ -n "$PORT" ] || { echo "stub did not start"; cat "$WORK/stub.err"; exit 1; }
URL=http://127.0.0.1:$PORT

PLOT=()
if command -v gnuplot >/dev/null; then PLOT=(--plot "$WORK/out.png"); fi

# 1. closed loop sweep, streamed chat: 20 requests per level, every 10th answered 503
"$LOAD" --url "$URL" --api-key sk-test --model stub --concurrency 1,4 --requests 20 \
    --input-tokens 16 --output-tokens 8 --slo ttft=1000,tpot=100 --quiet \
    --json "$WORK/out.json" --csv "$WORK/out.csv" "${PLOT[@]}" >"$WORK/table.txt"
cat "$WORK/table.txt"
"$PY" - "$WORK/out.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
runs = r["runs"]
assert [x["concurrency"] for x in runs] == [1, 4], runs
for x in runs:
    assert x["completed"] == 18 and x["failed"] == 2, x
    assert x["errors"][0]["http_status"] == 503 and x["errors"][0]["count"] == 2, x
    assert x["output_tokens"] == 18 * 8, x            # from the usage chunk
    assert 40 <= x["ttft_ms"]["p50"] < 1000, x["ttft_ms"]
    assert 4 <= x["itl_ms"]["p50"] < 100, x["itl_ms"]
    assert x["itl_ms"]["n"] == 18 * 7, x["itl_ms"]    # 7 gaps per 8-token answer
    assert 4 <= x["tpot_ms"]["mean"] < 100, x["tpot_ms"]
    assert x["e2e_ms"]["p50"] >= x["ttft_ms"]["p50"] + 7 * 4, x
    assert x["good"] == 18, x
print("json ok")
PYEOF
grep -q "^4,0,18,2," "$WORK/out.csv"
if [ ${#PLOT[@]} -gt 0 ]; then head -c 4 "$WORK/out.png" | grep -q PNG; fi

# 2. not streamed, completions endpoint: TTFT is the whole answer
"$LOAD" --url "$URL/v1" --api-key sk-test --model stub --endpoint completions --no-stream \
    --concurrency 2 --requests 6 --output-tokens 5 --quiet --json "$WORK/ns.json" >/dev/null
"$PY" - "$WORK/ns.json" <<'PYEOF'
import json, sys
x = json.load(open(sys.argv[1]))["runs"][0]
assert x["completed"] == 6 and x["failed"] == 0, x
assert abs(x["ttft_ms"]["p50"] - x["e2e_ms"]["p50"]) < 1e-6, x
assert x["output_tokens"] == 30 and x["itl_ms"]["n"] == 0, x
print("no-stream ok")
PYEOF

# 3. open loop, a sweep of two Poisson rates with 20 requests each (plot on a rate axis)
"$LOAD" --url "$URL" --api-key sk-test --model stub --rate 20,40 --requests 20 --max-inflight 8 \
    --output-tokens 4 --quiet --json "$WORK/ol.json" "${PLOT[@]/out.png/ol.png}" >/dev/null || true
"$PY" - "$WORK/ol.json" <<'PYEOF'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
assert [x["rate_rps"] for x in runs] == [20, 40], runs
for x in runs:
    assert x["completed"] + x["failed"] == 20 and x["completed"] >= 17, x
    assert x["concurrency"] == 0, x
# 20 Poisson arrivals at 20/s take about a second; at 40/s about half of that
assert runs[0]["duration_s"] > runs[1]["duration_s"] * 1.2 or runs[0]["duration_s"] > 0.6, runs
print("open loop ok")
PYEOF

# 4. a wrong key: every request fails with 401, exit status 1, the table says why
set +e
"$LOAD" --url "$URL" --api-key wrong --model stub --requests 3 --quiet >"$WORK/bad.txt" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] || { echo "expected exit 1, got $rc"; cat "$WORK/bad.txt"; exit 1; }
grep -q "errors 401" "$WORK/bad.txt"
grep -q "invalid api key" "$WORK/bad.txt"

# 5. nothing listening: transport errors, still a clean report
set +e
"$LOAD" --url http://127.0.0.1:1 --model stub --requests 2 --quiet >"$WORK/down.txt" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "errors transport" "$WORK/down.txt"

# 6. a usage error is exit status 2
set +e
"$LOAD" --url "$URL" --model stub --concurrency 0 >/dev/null 2>&1
rc=$?
set -e
[ "$rc" -eq 2 ]
# 7. cold start: the command starts a server after a pause; the time to the first token
#    includes that pause, and the warm request is measured too
CPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$LOAD" --url "http://127.0.0.1:$CPORT" --model stub --output-tokens 4 --json "$WORK/cold.json" \
    --cold-start "sleep 1; exec $PY $HERE/openai_stub.py --port $CPORT --ttft-ms 30 --itl-ms 1" \
    --cold-start-timeout 60 >"$WORK/cold.txt"
grep -q "command start -> first token" "$WORK/cold.txt"
"$PY" - "$WORK/cold.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))["cold_start"]
assert c["ready_ms"] >= 1000 + 30, c
assert c["attempts"] >= 2, c
assert 30 <= c["warm_ttft_ms"] < 1000, c
print("cold start ok")
PYEOF
# the server command was stopped with the run
sleep 0.5
if "$PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $CPORT)) != 0)"; then
    echo "cold-start server still running"; exit 1
fi
# 8. a server that ignores "stream": true answers with one JSON body: still measured
"$PY" "$HERE/openai_stub.py" --port 0 --ttft-ms 5 --itl-ms 1 --ignore-stream >"$WORK/port2" \
    2>"$WORK/stub2.err" &
STUB2_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port2" ] && break; sleep 0.1; done
"$LOAD" --url "http://127.0.0.1:$(head -n1 "$WORK/port2")" --model stub --requests 3 \
    --output-tokens 4 --quiet --json "$WORK/is.json" >/dev/null
kill "$STUB2_PID"
"$PY" - "$WORK/is.json" <<'PYEOF'
import json, sys
x = json.load(open(sys.argv[1]))["runs"][0]
assert x["completed"] == 3 and x["output_tokens"] == 12, x
assert abs(x["ttft_ms"]["p50"] - x["e2e_ms"]["p50"]) < 1e-6, x
print("ignored stream ok")
PYEOF
echo "e2e ok"

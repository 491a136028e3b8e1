-- wrk script of `make bench BENCH=ingest` (bench/bench_ingest.py): signed Nylas webhooks read
-- from a file the bench wrote (one "signature<TAB>body" line each, unique notification ids),
-- each sent once; threads take every n-th line. With WRK_PACE_MS set, each connection waits
-- a random 0..2x that many milliseconds between answer and next request (the paced half-peak
-- run); without it, requests go back to back (closed loop). `done` prints one JSON line.

local pace_ms = tonumber(os.getenv("WRK_PACE_MS") or "0")
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local reqs = {}
local at = 0

function init(args)
  local path, threads = args[1], tonumber(args[2])
  local n = 0
  for line in io.lines(path) do
    if n % threads == tid then
      local sig, body = line:match("^(%x+)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/nylas", {
        ["Content-Type"] = "application/json",
        ["X-Nylas-Signature"] = sig,
      }, body)
    end
    n = n + 1
  end
end

function request()
  at = at + 1
  if at > #reqs then
    at = 1 -- the bench sizes the file so that this never happens (a repeat is a duplicate)
  end
  return reqs[at]
end

if pace_ms > 0 then
  function delay()
    return math.random() * 2 * pace_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
      .. '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max
  ))
end

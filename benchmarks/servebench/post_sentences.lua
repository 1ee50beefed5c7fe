-- wrk script: every request POSTs one JSON embeddings body built from the next line of a file.
--
--   wrk -t1 -c64 -d15s -s post_sentences.lua URL -- FILE START MODEL MODE
--
-- FILE holds one JSON string literal per line (a sentence, already escaped). START is the line
-- the first request uses, so consecutive runs can go on where the last one stopped. MODE
-- "distinct" gives every request its own text: after the file's end the lines come round again
-- with the turn number appended ("... 2"); MODE "repeat" cycles over the lines as they are
-- (the cache-hit workload). wrk builds one request before it connects and never sends it, so
-- line START itself is skipped. done() prints one line, "WRK_RESULT {json}", for the harness.

local lines = {}
local count = 0
local index = 0
local model = "all-MiniLM-L6-v2"
local distinct = true

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s post_sentences.lua URL -- FILE [START] [MODEL] [distinct|repeat]")
  end
  index = tonumber(args[2] or "0")
  model = args[3] or model
  local mode = args[4] or "distinct"
  if mode ~= "distinct" and mode ~= "repeat" then
    error("MODE must be distinct or repeat, got " .. mode)
  end
  distinct = mode == "distinct"
  for line in io.lines(path) do
    count = count + 1
    lines[count] = line
  end
  if count == 0 then
    error("no sentences in " .. path)
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local text = lines[(index % count) + 1]
  local turn = math.floor(index / count)
  if distinct and turn > 0 then
    text = string.sub(text, 1, -2) .. " " .. turn .. '"'
  end
  index = index + 1
  return wrk.format(nil, nil, nil, '{"input":' .. text .. ',"model":"' .. model .. '"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end

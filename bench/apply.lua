-- wrk script for scripts/bench: every request applies a user never seen before, and the
-- answers are counted by status code across all threads.
local threads = {}
local counter = 0
local prefix

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

-- args[1] (optional) tells apart several wrk processes started in the same second.
function init(args)
  local process = args[1] or ""
  math.randomseed(os.time() + id + 1000 * (tonumber(process) or 0))
  prefix = "u" .. process .. "." .. id .. "-" .. math.random(1, 1000000000) .. "-"
  statuses = {}
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"userId":"' .. prefix .. counter .. '"}')
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1000000
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  for status, count in pairs(totals) do
    io.write(string.format("RESULT status_%d %d %.0f\n", status, count, count / seconds))
  end
  io.write(string.format("RESULT total %d %.0f\n", summary.requests, summary.requests / seconds))
  io.write(string.format("RESULT errors %d\n", summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
  io.write(string.format("RESULT p50_ms %.2f\n", latency:percentile(50) / 1000))
  io.write(string.format("RESULT p99_ms %.2f\n", latency:percentile(99) / 1000))
end

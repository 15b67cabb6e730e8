-- wrk script for bench/proxy/proxy_overhead.py.
-- POSTs the JSON body in $WRK_BODY_FILE with a bearer key from $WRK_API_KEY, and at the end
-- prints one line "WRK_RESULT {json}" with throughput, latency percentiles (us) and errors.

local function read_file(path)
  local f = assert(io.open(path, "rb"), "cannot open WRK_BODY_FILE " .. tostring(path))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.body = read_file(os.getenv("WRK_BODY_FILE"))
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("WRK_API_KEY") or "bench")

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}',
      latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)),
  }
  io.write("WRK_RESULT {" .. table.concat(parts, ",") .. "}\n")
end

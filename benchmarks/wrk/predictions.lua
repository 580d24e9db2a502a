-- wrk script for benchmarks/bench_service.py: POST one real bin photo per request to /v1/predictions.
--
--   BENCH_API_KEY=bw_... wrk -t1 -c8 -d10s -s benchmarks/wrk/predictions.lua \
--       http://127.0.0.1:8000/v1/predictions -- BODY_DIR COUNT BOUNDARY
--
-- BODY_DIR holds body_0000.bin .. body_<COUNT-1>.bin, each a complete multipart/form-data body (one part
-- named "images", one JPEG) written ahead of time by bench_service.py with the multipart BOUNDARY. Building
-- the bodies in Python keeps wrk's Lua to reading bytes, and every request a real photo of real size. The
-- API key comes from the environment (BENCH_API_KEY), not the command line, so `ps` does not show it.
--
-- done() prints one line "BENCH_JSON {...}" with requests, non-2xx responses (by status), socket errors
-- and latency percentiles in microseconds, which bench_service.py parses.

local requests = {}
local count = 0
local index = 0
-- Per thread (each wrk thread has its own Lua state); collected in done() through thread:get.
non2xx = 0
statuses = {}

local threads = {}

function setup(thread)
   -- Each thread starts at its own place in the cycle, so two threads do not send the same photo in step.
   thread:set("offset", #threads)
   table.insert(threads, thread)
end

function init(args)
   local dir, n, boundary = args[1], tonumber(args[2]), args[3]
   if dir == nil or n == nil or boundary == nil then
      error("usage: wrk ... -s predictions.lua URL -- BODY_DIR COUNT BOUNDARY")
   end
   local headers = {
      ["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
      ["X-API-Key"] = os.getenv("BENCH_API_KEY") or "",
   }
   for i = 0, n - 1 do
      local path = string.format("%s/body_%04d.bin", dir, i)
      local f = assert(io.open(path, "rb"))
      local body = f:read("*a")
      f:close()
      -- Formatted once here (request line, Host, Content-Length and all), so request() only picks one.
      requests[i + 1] = wrk.format("POST", nil, headers, body)
   end
   count = n
   index = (offset or 0) % count
end

function request()
   -- Cycle through the photos: every request carries the next one.
   index = index % count + 1
   return requests[index]
end

function response(status, headers, body)
   -- wrk itself counts only status > 399 (summary.errors.status); anything but 2xx is a failed prediction.
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   end
end

function done(summary, latency, requests_)
   local bad, by_status = 0, {}
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("non2xx") or 0)
      for code, n in pairs(thread:get("statuses") or {}) do
         by_status[code] = (by_status[code] or 0) + n
      end
   end
   local parts = {}
   for code, n in pairs(by_status) do
      table.insert(parts, string.format('"%s": %d', code, n))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, "statuses": {%s}, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p95": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
      summary.requests, summary.duration, summary.bytes, bad, table.concat(parts, ", "),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean, latency.max))
end

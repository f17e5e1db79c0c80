-- wrk script of the macro benchmark: checks every answer and prints a summary.
--   wrk ... -s check.lua URL -- EXPECT [PATH...]
-- EXPECT "pool": the answer's X-Pool must be the pool of its X-Kind (image ->
-- images, cgi -> cgi, static -> static); "any": only the status is checked
-- (direct access, where one backend answers everything).  PATHs: requests to
-- cycle through (the mixed workload); none: the URL's path.
-- A non-2xx answer or a wrong pool is counted, never hidden: the harness fails
-- the figure when either count is not zero.
-- The guest's /proc/stat cpu line is read when wrk sets its first thread up
-- and again in done(): the CPU time of the whole guest over the run.
local threads = {}
local POOL = { image = "images", cgi = "cgi", static = "static" }

local function procstat()
   local f = io.open("/proc/stat")
   local line = f:read("*l")
   f:close()
   return line
end

function setup(thread)
   if stat0 == nil then stat0 = procstat() end
   table.insert(threads, thread)
end

function init(args)
   bad_status = 0
   wrong_pool = 0
   answers = 0
   any_pool = args[1] == "any"
   reqs = {}
   for i = 2, #args do
      reqs[#reqs + 1] = wrk.format(nil, args[i])
   end
   idx = 0
   if #reqs == 0 then
      request = nil -- static request: wrk sends the URL's path without calling Lua
   end
end

function request()
   idx = idx % #reqs + 1
   return reqs[idx]
end

function response(status, headers, body)
   answers = answers + 1
   if status < 200 or status > 299 then
      bad_status = bad_status + 1
   elseif not any_pool then
      -- Field names are case-insensitive (HAProxy sends them lower-case).
      local kind, pool
      for k, v in pairs(headers) do
         local l = string.lower(k)
         if l == "x-kind" then kind = v elseif l == "x-pool" then pool = v end
      end
      if kind == nil or POOL[kind] == nil or pool ~= POOL[kind] then
         wrong_pool = wrong_pool + 1
      end
   end
end

function done(summary, latency, requests)
   local stat1 = procstat()
   local bad, wrong, n = 0, 0, 0
   for _, t in ipairs(threads) do
      bad = bad + t:get("bad_status")
      wrong = wrong + t:get("wrong_pool")
      n = n + t:get("answers")
   end
   local e = summary.errors
   io.write(string.format(
      'KTBENCH {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"mean_us": %.1f, "err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, ' ..
      '"err_timeout": %d, "bad_status": %d, "wrong_pool": %d, "checked": %d, ' ..
      '"stat0": "%s", "stat1": "%s"}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(99), latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout, bad, wrong, n, stat0, stat1))
end

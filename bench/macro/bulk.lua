-- wrk script of the macro benchmark for bulk downloads: no response() hook
-- (it would make wrk buffer every 64 MiB body), so wrk counts statuses >= 400
-- itself (err_status) and the harness checks status, pool and size of one
-- download with curl before the run and the bytes per answer after it.
-- /proc/stat's cpu line at the start and the end, as check.lua does.
local function procstat()
   local f = io.open("/proc/stat")
   local line = f:read("*l")
   f:close()
   return line
end

function setup(thread)
   if stat0 == nil then stat0 = procstat() end
end

function done(summary, latency, requests)
   local stat1 = procstat()
   local e = summary.errors
   io.write(string.format(
      'KTBENCH {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p99_us": %d, ' ..
      '"mean_us": %.1f, "err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, ' ..
      '"err_timeout": %d, "bad_status": 0, "wrong_pool": 0, "checked": 0, ' ..
      '"stat0": "%s", "stat1": "%s"}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(99), latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout, stat0, stat1))
end
